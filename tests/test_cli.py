"""The dit-video entry point and the package layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dit_video.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_info_prints_architecture_and_parameters(capsys):
    assert main(["info", "--preset", "XL/2"]) == 0
    out = capsys.readouterr().out
    assert "14 spatial, 14 temporal" in out and "(673.8M)" in out
    assert main(["info", "--preset", "tiny", "depth=2", "positions=rope3d"]) == 0
    assert "positions rope3d" in capsys.readouterr().out
    assert main(["info", "--preset", "XL/2", "--yaml"]) == 0  # a preset as a recipe section, loadable as one
    from omegaconf import OmegaConf

    from dit_video.config import VideoDiTConfig

    section = OmegaConf.to_container(OmegaConf.create(capsys.readouterr().out))["model"]
    assert VideoDiTConfig.from_dict(section) == VideoDiTConfig.from_preset("XL/2")


def test_user_errors_are_one_line(capsys):
    assert main(["info", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "Traceback" not in err


def test_console_script_runs():
    exe = Path(sys.executable).with_name("dit-video")
    if not exe.exists():
        pytest.skip("dit-video console script not installed in this environment (run pip install -e .)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "make-synthetic" in out.stdout


# Who may import whom (docs/design.md): lower layers never import upper ones. dit_video/errors.py (one base
# class, no imports) may be imported by any layer but kernels.
LAYERS = {
    "dit_video/kernels": set(),  # kernels import nothing from dit_video (dit_video._C and dit_video.kernels excepted)
    "dit_video/config.py": set(),
    "dit_video/models": {"dit_video.kernels", "dit_video.config", "dit_video.models"},
    "dit_video/diffusion": {"dit_video.diffusion", "dit_video.config"},
    "dit_video/data": {"dit_video.data", "dit_video.config"},
    "dit_video/encoders": {"dit_video.encoders", "dit_video.config"},
    # inference: importable without dit_video.train
    "dit_video/pipeline": {"dit_video.pipeline", "dit_video.config", "dit_video.models", "dit_video.kernels",
                           "dit_video.diffusion", "dit_video.encoders", "dit_video.data"},
    # metrics of generated videos: numbers from frames (and the synthetic palette), no model, no trainer
    "dit_video/eval": {"dit_video.eval", "dit_video.config", "dit_video.data"},
    "dit_video/parallel": {"dit_video.parallel", "dit_video.config"},
    # the trainer uses everything below it, never the CLI
    "dit_video/train": {"dit_video.train", "dit_video.config", "dit_video.models", "dit_video.kernels",
                        "dit_video.diffusion", "dit_video.encoders", "dit_video.data", "dit_video.pipeline",
                        "dit_video.parallel", "dit_video.eval"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return {n for n in names if n.startswith("dit_video") and n != "dit_video.errors"}  # errors.py: a leaf


def test_no_top_level_package_shadows_a_dependency():
    """Run from the checkout (as pytest and `python -m benchmarks` are), the repo root is on sys.path: a top-level
    source dir there named like an installed package hides it. A top-level kernels/ once hid Hugging Face's
    `kernels`, which transformers >= 5.25 imports (ImportError: CUDAProperties in every encoder test)."""
    code = ("import importlib.util as u; s = u.find_spec('kernels'); "
            "print(s.origin if s and s.origin else list(s.submodule_search_locations) if s else None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(ROOT / "kernels") not in out.stdout, f"`import kernels` from the repo root finds {out.stdout.strip()}"
    assert not (ROOT / "kernels").exists(), "no top-level kernels/ dir: the kernels live in dit_video/kernels/"


@pytest.mark.parametrize("layer", list(LAYERS))
def test_no_upward_imports(layer):
    target = ROOT / layer
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files, f"{layer} not found: the layer map above is out of date"
    allowed = LAYERS[layer] | {"dit_video._C", "dit_video.kernels"} if layer == "dit_video/kernels" else LAYERS[layer]
    if layer == "dit_video/kernels":
        assert not any("dit_video.errors" in f.read_text() for f in files), "kernels import nothing from dit_video"
    for f in files:
        bad = {n for n in _imports(f) if not any(n == a or n.startswith(a + ".") for a in allowed)}
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}: not allowed for {layer}"


def test_pipeline_imports_without_the_trainer():
    code = ("import sys, dit_video.pipeline as p; p.SamplingPipeline; p.load_export; p.write_video; "
            "bad = sorted(m for m in sys.modules if m.startswith(('dit_video.train', 'dit_video.cli', "
            "'dit_video.commands'))); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
