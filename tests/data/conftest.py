"""Fixtures for the data tests: shards written into tmp dirs."""

from __future__ import annotations

import os

import pytest

from dit_video.data.writer import write_shard


@pytest.fixture
def shard_of(tmp_path):
    """``shard_of(name, [(key, members)])`` writes a tar in tmp_path/shards and returns its path."""
    d = tmp_path / "shards"
    d.mkdir(exist_ok=True)

    def write(name: str, samples) -> str:
        path = os.path.join(d, name)
        write_shard(path, samples)
        return path

    return write


@pytest.fixture(autouse=True)
def _fresh_decord_memory():
    """Each test starts with no frame sizes marked as decord-failing (a per-process memory in codec)."""
    from dit_video.data import codec

    codec._DECORD_BAD_SIZES.clear()
    yield
    codec._DECORD_BAD_SIZES.clear()
