"""Shapes typical of video DiTs, per device: the full grid on CUDA, a CPU-sized slice, a tiny quick set.

Widths follow Latte's presets (S/2 .. XL/2: heads x head_dim); T is latent frames (8..32) and S
tokens per frame (256..4096 on a GPU). The CPU set keeps the S/2 (and, for the element-wise ops,
XL/2) widths at smaller T x S so that the whole CPU run stays within minutes; ``--quick`` runs one
tiny shape per op so that CI exercises every code path in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADS: dict[str, tuple[int, int]] = {  # preset -> (heads, head_dim)
    "tiny": (2, 32),
    "S/2": (6, 64),
    "B/2": (12, 64),
    "L/2": (16, 64),
    "XL/2": (16, 72),
}
ATTENTION_KINDS = ("spatial", "temporal", "full", "cross")


@dataclass(frozen=True)
class Case:
    """One kernel call: op (and attention kind) at one shape."""

    op: str  # "attention" | "gated_residual_adaln" | "rope3d" | "gelu_tanh"
    kind: str  # attention: spatial / temporal / full / cross; "-" otherwise
    preset: str
    batch: int
    frames: int  # T (latent frames)
    spf: int  # S (tokens per frame)
    text_len: int = 120  # cross attention: text tokens L

    @property
    def heads(self) -> int:
        return HEADS[self.preset][0]

    @property
    def head_dim(self) -> int:
        return HEADS[self.preset][1]

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def tokens(self) -> int:
        return self.batch * self.frames * self.spf

    @property
    def name(self) -> str:
        return self.op if self.kind == "-" else f"{self.op}/{self.kind}"

    def shape(self) -> dict[str, int]:
        d = {"B": self.batch, "T": self.frames, "S": self.spf, "H": self.heads, "D": self.head_dim,
             "width": self.width}
        if self.kind == "cross":
            d["L"] = self.text_len
        return d


def _grid(presets: tuple[str, ...], ts: tuple[tuple[int, int], ...], batch: int, text_len: int,
          max_full_tokens: int, elementwise_presets: tuple[str, ...]) -> list[Case]:
    cases = []
    for kind in ATTENTION_KINDS:
        for p in presets:
            for t, s in ts:
                if kind == "full" and t * s > max_full_tokens:
                    continue
                cases.append(Case("attention", kind, p, batch, t, s, text_len))
    for op in ("gated_residual_adaln", "rope3d", "gelu_tanh"):
        for p in elementwise_presets:
            for t, s in ts:
                cases.append(Case(op, "-", p, batch, t, s, text_len))
    return cases


def cases_for(device: str, quick: bool) -> list[Case]:
    """The shape set for a device (``quick``: one tiny shape per op and attention kind)."""
    if quick:
        return _grid(("tiny",), ((4, 16),), batch=1, text_len=8, max_full_tokens=64, elementwise_presets=("tiny",))
    if device == "cuda":
        return _grid(("S/2", "B/2", "L/2", "XL/2"), ((8, 256), (16, 256), (16, 1024), (32, 1024), (16, 4096)),
                     batch=2, text_len=120, max_full_tokens=16384,
                     elementwise_presets=("S/2", "B/2", "L/2", "XL/2"))
    return _grid(("S/2",), ((8, 64), (8, 256), (16, 256)), batch=1, text_len=120, max_full_tokens=2048,
                 elementwise_presets=("S/2", "XL/2"))
