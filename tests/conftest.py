"""Test configuration. TRITON_INTERPRET must be set before triton is imported anywhere."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# auto's measured kernel choices (dit_video/kernels/autotune.py): one cache file per test session, shared
# with the subprocesses the tests start (ranks, resumed runs), never the user's ~/.cache.
if "DIT_VIDEO_AUTOTUNE_CACHE" not in os.environ:
    import tempfile

    os.environ["DIT_VIDEO_AUTOTUNE_CACHE"] = os.path.join(tempfile.mkdtemp(prefix="dit-video-autotune-"),
                                                          "autotune.json")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
