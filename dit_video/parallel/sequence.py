"""Sequence parallelism for a spatiotemporal DiT: N ranks share one clip (DSP for factorized, Ulysses for full).

Tokens are ``[B, T', S, D]``. Factorized attention (VideoSys' DSP): spatial blocks see this rank's
T'/N whole frames and need no communication; before a temporal block one all-to-all switches to a
split by positions (all T' frames of S/N positions), after it one switches back:

    frames layout  [B, T'/N, S, D] --to_positions--> [B, T', S/N, D] --temporal block--> --to_frames-->

so a temporal block costs two all-to-alls of the block's activations and a spatial block none.
Full 3D attention (DeepSpeed-Ulysses): q, k, v ``[B, T'/N*S, H, Dh]`` -> all-to-all to
``[B, T'*S, H/N, Dh]`` (every token, a share of the heads) -> attention -> back (four all-to-alls
of q, k, v and o per block). Text cross-attention sees the whole caption on every rank.

The model holds a :class:`SequenceParallel` (``VideoDiT.set_sequence_parallel``) and asks it which
frames and positions are local and to switch layouts; the output is gathered along frames so every
rank of the group computes the same loss. Each rank's parameter gradients are then its share of the
group's: they must be *summed* over the group (the trainer scales the loss by N, DeepSpeed averages
over all ranks: see dit_video/train/trainer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .comm import all_to_all, gather


@dataclass
class SequenceParallel:
    """This rank's place in its sequence-parallel group (``size`` ranks, this one ``rank``) and the group."""

    group: object
    size: int
    rank: int

    def check(self, grid: tuple[int, int, int], heads: int, attention: str) -> None:
        """``ValueError`` naming the numbers when a clip's latent grid cannot be split over the group."""
        t, h, w = grid
        n = self.size
        if t % n:
            raise ValueError(f"sequence parallel over {n} ranks splits the clip by latent frames: T'={t} is not "
                             f"divisible by {n} (set parallel.sequence_parallel to a divisor of {t})")
        if attention == "factorized" and (h * w) % n:
            raise ValueError(f"sequence parallel over {n} ranks splits temporal blocks by positions: S={h}x{w}="
                             f"{h * w} is not divisible by {n}")
        if attention == "full" and heads % n:
            raise ValueError(f"Ulysses sequence parallel over {n} ranks splits attention heads: num_heads={heads} "
                             f"is not divisible by {n}")

    def frames(self, t: int) -> slice:
        """This rank's latent frames of a clip of ``t``."""
        k = t // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def positions(self, s: int) -> slice:
        k = s // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def to_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T'/N, S, D] -> [B, T', S/N, D]."""
        return all_to_all(tokens, self.group, scatter_dim=2, gather_dim=1)

    def to_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T', S/N, D] -> [B, T'/N, S, D]."""
        return all_to_all(tokens, self.group, scatter_dim=1, gather_dim=2)

    def seq_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L/N, H, Dh] -> [B, L, H/N, Dh] (Ulysses)."""
        return all_to_all(x, self.group, scatter_dim=2, gather_dim=1)

    def heads_to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H/N, Dh] -> [B, L/N, H, Dh]."""
        return all_to_all(x, self.group, scatter_dim=1, gather_dim=2)

    def gather_frames(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's frames of a clip -> all of them (rank order), along ``dim``."""
        return gather(x, self.group, dim)
