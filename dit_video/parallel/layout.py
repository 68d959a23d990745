"""Ranks as a grid: data-parallel groups x sequence-parallel groups.

    rank = dp_rank * sp + sp_rank        (the sp ranks of one group are consecutive: one node first)

The N = sp ranks of a group share one clip (the loader splits clips by ``dp_rank`` over ``dp_size``
readers, so they read the same ones); training randomness is drawn for the global batch and sliced
by ``dp_rank``, so they draw the same noise and timesteps. DeepSpeed shards ZeRO state and averages
gradients over all ``world_size`` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sequence import SequenceParallel


@dataclass
class ParallelLayout:
    world_size: int
    rank: int
    sp_size: int = 1
    sp: SequenceParallel | None = None

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size


def build_layout(world_size: int, rank: int, sp_size: int) -> ParallelLayout:
    """The layout for ``sp_size``; creates the sequence-parallel process groups (every rank must call this)."""
    if sp_size < 1 or world_size % sp_size:
        raise ValueError(f"parallel.sequence_parallel={sp_size} must divide the number of ranks ({world_size})")
    if sp_size == 1:
        return ParallelLayout(world_size, rank)
    import torch.distributed as dist

    mine = None
    for g in range(world_size // sp_size):  # every rank creates every group, in the same order
        ranks = list(range(g * sp_size, (g + 1) * sp_size))
        group = dist.new_group(ranks)
        if rank in ranks:
            mine = group
    return ParallelLayout(world_size, rank, sp_size, SequenceParallel(mine, sp_size, rank % sp_size))
