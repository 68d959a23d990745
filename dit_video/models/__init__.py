"""The VideoDiT backbone and its building blocks."""

from .videodit import VideoDiT, VideoDiTBlock

__all__ = ["VideoDiT", "VideoDiTBlock"]
