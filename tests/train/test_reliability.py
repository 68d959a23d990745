"""Fault injection on the trainer: crashes during saves, damaged and malicious checkpoints, a full disk,
branching resumes, torn logs, recipes with resolvers. Each test injects a fault and checks what held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import DEMO, ROOT, cli_error, tiny_overrides

from dit_video.cli import main
from dit_video.train import checkpoint as ckpt
from dit_video.train.metrics import read_metrics

DET = ["train.deterministic=true", "train.keep_last=0"]


def _cli(args: list[str], *, fault: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DIT_VIDEO_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["DIT_VIDEO_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "dit_video.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _train(shards, out, *extra, fault=None, resume=None) -> subprocess.CompletedProcess:
    args = ["train", str(DEMO), *tiny_overrides(shards, out, *extra)]
    if resume:
        args += ["--resume", resume]
    return _cli(args, fault=fault)


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    """Replace a checkpoint file with a payload and update the marker's recorded size (so only the
    content check can catch it)."""
    torch.save({"module": Payload(marker)}, path)
    tag = next(p for p in path.parents if ckpt.TAG_RE.match(p.name))
    m = json.loads((tag / ckpt.MARKER).read_text())
    m["files"][str(path.relative_to(tag))] = path.stat().st_size
    (tag / ckpt.MARKER).write_text(json.dumps(m))


@pytest.fixture(scope="module")
def run4(tmp_path_factory, shards):
    """A finished 4-step run with checkpoints at 2 and 4 (copied by tests that damage it)."""
    out = tmp_path_factory.mktemp("run4") / "run"
    r = _train(shards, out, "train.steps=4", "train.ckpt_every=2", *DET)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize("victim", ["mp_rank_00_model_states.pt", "optim_states", "trainer_rank0.pt"])
def test_pickle_payload_in_a_checkpoint_never_runs(tmp_path, run4, shards, victim):
    out = _copy(run4, tmp_path / "run")
    tag4 = out / "checkpoints" / ckpt.tag_for(4)
    path = next(p for p in tag4.iterdir() if victim in p.name)
    marker = tmp_path / "pwned"
    _plant(path, marker)
    # an explicit --resume of the tag: a one-line error naming the file
    r = _train(shards, out, "train.steps=6", "train.ckpt_every=2", *DET, resume=str(tag4))
    assert r.returncode == 2 and not marker.exists(), r.stderr[-2000:]
    assert path.name in r.stderr and "refusing to load" in r.stderr and "Traceback" not in r.stderr
    assert main(["export", str(tag4), str(tmp_path / "w")]) == 2  # export goes through the same checks
    assert not marker.exists()
    # --resume auto: the tag is not trusted, the run continues from step 2
    r = _train(shards, out, "train.steps=6", "train.ckpt_every=2", *DET, resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not marker.exists()
    assert "cannot be trusted" in r.stderr and f"resumed from {out / 'checkpoints' / ckpt.tag_for(2)}" in r.stderr
    aside = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(ckpt.ABANDONED_PREFIX)]
    assert len(aside) == 1 and (aside[0] / ckpt.tag_for(4) / path.name).is_file()  # moved aside, not deleted


def test_truncated_file_in_a_complete_tag_falls_back(tmp_path, run4, shards):
    out = _copy(run4, tmp_path / "run")
    f = out / "checkpoints" / ckpt.tag_for(4) / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    r = _train(shards, out, "train.steps=6", "train.ckpt_every=2", *DET, resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "bytes, the marker recorded" in r.stderr and "falling back" in r.stderr
    assert f"resumed from {out / 'checkpoints' / ckpt.tag_for(2)}" in r.stderr
    want = _losses(run4)
    got = _losses(out)
    assert got[3] == want[3] and got[4] == want[4]  # steps 3, 4 re-run from step 2, bit for bit


def test_resume_from_an_older_step_moves_the_abandoned_branch_aside(tmp_path, shards):
    out = tmp_path / "run"
    r = _train(shards, out, "train.steps=4", "train.ckpt_every=1", *DET)
    assert r.returncode == 0, r.stderr[-3000:]
    tag2 = out / "checkpoints" / ckpt.tag_for(2)
    r = _train(shards, out, "train.steps=3", "train.ckpt_every=1", "train.deterministic=true", "train.keep_last=1",
               resume=str(tag2))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "moved ['step_00000003', 'step_00000004']" in r.stderr
    ck = out / "checkpoints"
    assert [p.name for p in ckpt.complete_checkpoints(ck)] == [ckpt.tag_for(3)]  # keep_last=1 of this lineage
    (aside,) = [p for p in ck.iterdir() if p.name.startswith(ckpt.ABANDONED_PREFIX)]
    assert sorted(p.name for p in aside.iterdir()) == [ckpt.tag_for(3), ckpt.tag_for(4)]
    r = _train(shards, out, "train.steps=5", "train.ckpt_every=1", "train.deterministic=true", "train.keep_last=1",
               resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ck / ckpt.tag_for(3)}" in r.stderr  # this lineage's step 3, not the old step 4


def test_torn_metrics_line_does_not_end_the_run(tmp_path, run4, shards):
    out = _copy(run4, tmp_path / "run")
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.1')  # a crash in the middle of a write
    r = _train(shards, out, "train.steps=6", "train.ckpt_every=1", *DET, resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(_losses(out)) == [1, 2, 3, 4, 5, 6] and "unreadable line" in r.stderr
    assert (out / "checkpoints" / ckpt.tag_for(6) / ckpt.MARKER).is_file()


@pytest.mark.parametrize("point", ["after_deepspeed", "mid_save", "before_marker"])
def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, shards, run4, point):
    out = tmp_path / "run"
    r = _train(shards, out, "train.steps=4", "train.ckpt_every=2", *DET, fault=f"enospc:{point}:4")
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last and "previous complete checkpoint is untouched" in last
    ck = out / "checkpoints"
    assert [p.name for p in ckpt.complete_checkpoints(ck)] == [ckpt.tag_for(2)]
    ckpt.verify(ck / ckpt.tag_for(2))
    r = _train(shards, out, "train.steps=4", "train.ckpt_every=2", *DET, resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _losses(out)[4] == _losses(run4)[4]


@pytest.mark.slow
def test_kill_during_saves_at_24_points_then_resume_bitwise(tmp_path, shards):
    """SIGKILL at six points of a save (before it, mid-file inside DeepSpeed, after DeepSpeed's files, between
    our files, before and after the marker) at each of four saves: every restart resumes from the newest
    complete checkpoint, and the losses and final EMA equal an uninterrupted run's bit for bit."""
    common = ["train.steps=9", "train.ckpt_every=2", *DET]
    full, crash = tmp_path / "full", tmp_path / "crash"
    r = _train(shards, full, *common)
    assert r.returncode == 0, r.stderr[-3000:]
    points = ["before_save", "mid_file", "after_deepspeed", "mid_save", "before_marker", "after_marker"]
    kills = 0
    for step in (2, 4, 6, 8):
        for point in points:
            r = _train(shards, crash, *common, fault=f"{point}:{step}", resume="auto")
            assert r.returncode == -9, f"{point}:{step} did not fire: rc {r.returncode} {r.stderr[-1500:]}"
            kills += 1
            done = [ckpt.step_of(p) for p in ckpt.complete_checkpoints(crash / "checkpoints")]
            want_last = step if point == "after_marker" else step - 2
            assert (done[-1] if done else 0) == want_last, (point, step, done)
    assert kills == 24
    r = _train(shards, crash, *common, resume="auto")
    assert r.returncode == 0, r.stderr[-3000:]
    want, got = _losses(full), _losses(crash)
    assert sorted(got) == list(range(1, 10)) and all(got[s] == want[s] for s in want), (want, got)
    from safetensors.torch import load_file

    a = load_file(str(full / "checkpoints" / ckpt.tag_for(9) / ckpt.EMA_FILE))
    b = load_file(str(crash / "checkpoints" / ckpt.tag_for(9) / ckpt.EMA_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_resolvers_are_refused_and_never_saved(tmp_path, shards, capsys, monkeypatch):
    monkeypatch.setenv("DIT_VIDEO_SECRET", "hunter2")
    recipe = tmp_path / "r.yaml"
    text = DEMO.read_text()
    assert "  lr: 1.0e-3" in text
    recipe.write_text(text.replace("  lr: 1.0e-3", "  lr: ${oc.env:DIT_VIDEO_SECRET}"))
    assert main(["train", str(recipe), *tiny_overrides(shards, tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    line = cli_error(err)
    assert "oc.env" in line and "resolver" in line and "hunter2" not in err
    assert main(["train", str(DEMO), *tiny_overrides(shards, tmp_path / "run"),
                 "train.out_dir=${oc.env:DIT_VIDEO_SECRET}"]) == 2
    assert "resolver" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_takes_options_among_overrides_and_refuses_bad_values(tmp_path, shards, capsys):
    out = tmp_path / "run"
    args = ["train", str(DEMO), *tiny_overrides(shards, out, "train.steps=1")]
    assert main([*args[:3], "--resume", "auto", *args[3:]]) == 0  # `train CFG a=b --resume auto c=d`
    assert (out / "checkpoints" / ckpt.tag_for(1) / ckpt.MARKER).is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["train", str(bad)]) == 2
    assert "not valid YAML" in cli_error(capsys.readouterr().err)
    assert main(["export", str(out), str(tmp_path / "w")]) == 0
    assert main(["sample", str(tmp_path / "w"), "--prompt", "a red square moving left", "--steps", "0",
                 "--out", str(tmp_path / "s.mp4")]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated_weights", "typed_config", "huge_config", "recipe_key", "recipe_yaml"])
def test_damaged_export_is_a_one_line_error(tmp_path, run4, capsys, damage):
    w = tmp_path / "w"
    assert main(["export", str(run4), str(w)]) == 0
    cfgj = json.loads((w / "config.json").read_text())
    if damage == "truncated_weights":
        f = w / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "typed_config":
        cfgj["depth"] = "2"
        (w / "config.json").write_text(json.dumps(cfgj))
    elif damage == "huge_config":  # must be refused from the weights' header, before allocating 4 TB
        cfgj["hidden_size"] = 1048576
        cfgj["num_heads"] = 1
        (w / "config.json").write_text(json.dumps(cfgj))
    elif damage == "recipe_key":
        (w / "train_config.yaml").write_text((w / "train_config.yaml").read_text() + "extra_section: 1\n")
    else:
        (w / "train_config.yaml").write_text("model: {hidden_size: [\n")
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["sample", str(w), "--prompt", "a red square moving left", "--steps", "1",
                 "--out", str(tmp_path / "s.mp4")]) == 2
    err = cli_error(capsys.readouterr().err)
    assert err.startswith("dit-video sample: error:"), err
    assert {"truncated_weights": "damaged or truncated", "typed_config": "depth must be int",
            "huge_config": "does not match", "recipe_key": "extra_section",
            "recipe_yaml": "not valid YAML"}[damage] in err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: nothing huge allocated
