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
