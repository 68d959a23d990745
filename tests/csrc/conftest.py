"""Fixtures for the compiled-extension tests: load dit_video.kernels.csrc_ops (prebuilt dit_video._C,
else a one-time JIT build of the CPU sources); skip only when no C++ compiler exists."""

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def csrc():
    try:
        import dit_video._C  # noqa: F401
    except ImportError:
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip("no prebuilt dit_video._C and no C++ compiler to JIT-build it")
    from dit_video.kernels import csrc_ops

    return csrc_ops
