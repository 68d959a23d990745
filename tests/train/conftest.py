"""Fixtures for the trainer tests: a few tiny synthetic shards and a tiny recipe."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    from dit_video.data import write_synthetic_shards

    out = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(str(out), 24, size=16, num_frames=4, samples_per_shard=8, seed=1, shapes=["square"],
                           colors=["red", "green", "blue"], directions=["left", "right"], speeds=["slowly"],
                           backgrounds=["plain"], max_objects=1, occlusion_prob=0.0, bounce=False)
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy CPU, OpenMP threads waiting on each other cost 10x."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
