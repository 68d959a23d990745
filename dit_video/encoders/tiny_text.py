"""``TinyTextEncoder``: a small learned text encoder for the demo, trained with the model.

Word-level: captions are lower-cased and split into ``[a-z0-9]+`` words; each known word has an
id, unknown words map to ``<unk>`` and are counted (``unknown_counts``), words past
``max_length`` are dropped and counted (``num_truncated``). An empty caption becomes the single
token ``<empty>``, a learned "no condition" embedding that classifier-free guidance can use.
States are ``LayerNorm(word embedding + position embedding)``, optionally followed by a few
transformer layers. The vocabulary is not a tensor: save ``config_dict()`` next to the weights
and rebuild with ``TinyTextEncoder.from_config``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from .text import TextEncoder, _check_texts

SPECIALS = ("<pad>", "<unk>", "<empty>")
PAD, UNK, EMPTY = 0, 1, 2
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """The tokenizer's words of ``text``."""
    return _WORD.findall(text.lower())


class TinyTextEncoder(TextEncoder):
    """See the module docstring. ``vocab``: the known words (specials are added in front)."""

    def __init__(self, vocab: Iterable[str], dim: int = 128, max_length: int = 16, layers: int = 0, heads: int = 4):
        super().__init__()
        seen: dict[str, None] = {}
        for w in vocab:
            for part in words(w):
                seen.setdefault(part, None)
        self.vocab = list(seen)
        self.ids = {w: i + len(SPECIALS) for i, w in enumerate(self.vocab)}
        self.dim, self.max_length, self.layers, self.heads = dim, max_length, layers, heads
        self.embed = nn.Embedding(len(SPECIALS) + len(self.vocab), dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(max_length, dim))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.5)
        nn.init.normal_(self.pos, std=0.02)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.unknown_counts: Counter[str] = Counter()
        self.num_truncated = 0

    @staticmethod
    def build_vocab(captions: Iterable[str], min_count: int = 1) -> list[str]:
        """Words of ``captions`` seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in words(c))
        return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]

    @property
    def num_unknown(self) -> int:
        return sum(self.unknown_counts.values())

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids [B, max_length] (long) and mask [B, max_length] (bool), on CPU; updates the counters."""
        ids = torch.full((len(texts), self.max_length), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ws = words(text)
            if len(ws) > self.max_length:
                self.num_truncated += 1
                ws = ws[: self.max_length]
            row = []
            for w in ws:
                if w in self.ids:
                    row.append(self.ids[w])
                else:
                    self.unknown_counts[w] += 1
                    row.append(UNK)
            ids[i, : max(len(row), 1)] = torch.tensor(row or [EMPTY])
        return ids, ids != PAD

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(_check_texts(texts))
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        h = self.embed(ids) + self.pos
        for blk in self.blocks:
            h = blk(h, src_key_padding_mask=~mask)
        return self.norm(h) * mask[..., None], mask

    def config_dict(self) -> dict[str, Any]:
        """JSON-able constructor arguments (with the vocabulary)."""
        return {"vocab": list(self.vocab), "dim": self.dim, "max_length": self.max_length, "layers": self.layers,
                "heads": self.heads}

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> TinyTextEncoder:
        return cls(**d)
