"""Parallelism beyond data parallel: one clip over several ranks (see :mod:`.sequence`, :mod:`.layout`)."""

from .comm import all_to_all, gather
from .layout import ParallelLayout, build_layout
from .sequence import SequenceParallel

__all__ = ["ParallelLayout", "SequenceParallel", "all_to_all", "build_layout", "gather"]
