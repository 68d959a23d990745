"""Loading the extension: without a prebuilt dit_video._C and without a C++ compiler, the cpu backend
is unavailable with that reason (one warning) and auto falls back to torch."""

import importlib.util
import os
import subprocess
import sys

import pytest

CHILD = r"""
import warnings
import torch
from dit_video.kernels import attention, available, resolve
q = torch.randn(2, 5, 3, 2, 8)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    impl = resolve("attention", "auto", q, q, q)
print("BACKEND", impl.backend)
print("REASON", available("attention")["cpu"])
print("WARNINGS", sum("C++ extension is unavailable" in str(x.message) for x in w))
torch.testing.assert_close(attention(q, q, q), attention(q, q, q, backend="torch"))
"""


@pytest.mark.skipif(importlib.util.find_spec("dit_video._C") is not None, reason="dit_video._C is prebuilt")
def test_no_compiler_means_cpu_backend_unavailable(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["BACKEND"] == "torch"
    assert "no C++ compiler" in lines["REASON"]
    assert lines["WARNINGS"] == "1"


def test_build_ext_command(csrc, capsys):
    from dit_video.cli import main

    assert main(["build-ext"]) == 0
    out = capsys.readouterr().out
    assert "prebuilt" in out or "kernel backends ready: cpu" in out


def test_the_cpu_kernels_are_built_with_openmp(csrc):
    # at::parallel_for is an inline OpenMP loop: a library compiled without -fopenmp runs every CPU kernel on
    # one thread whatever torch.get_num_threads() says (it did until 2026-12-02). Such a library imports no
    # GOMP_parallel from libgomp.
    path = csrc.LIBRARY
    if not os.path.isfile(path):
        pytest.skip(f"the library was loaded before csrc_ops ({csrc.ORIGIN}): its file is unknown")
    with open(path, "rb") as f:
        assert b"GOMP_parallel" in f.read(), f"{path} was built without -fopenmp: its kernels run on one thread"
