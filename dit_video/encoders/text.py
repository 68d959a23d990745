"""Text encoders: ``encode(list[str]) -> (tokens [B, L, D] float, mask [B, L] bool)``.

Token states at masked (padding) positions are zero. ``HFTextEncoder`` runs any Hugging Face
encoder from a local directory (BERT-like, T5 encoder, CLIP text) frozen, with an optional
on-disk embedding cache; :class:`~dit_video.encoders.tiny_text.TinyTextEncoder` is the small
learned encoder the demo trains with the model.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from .cache import EmbeddingCache
from .paths import require_local_dir


class TextEncoder(nn.Module):
    """Interface: ``dim`` (width D of the token states), ``max_length`` (L) and ``encode``."""

    dim: int
    max_length: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(texts)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"encode() takes a list of strings, got {type(texts).__name__}")
    return list(texts)


_T5_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


class HFTextEncoder(TextEncoder):
    """A frozen transformers encoder; tokens are its last hidden states padded to ``max_length``."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 77, *, cache_dir: str | os.PathLike | None = None,
                 model_key: str | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        tokenizer.padding_side = "right"  # masks are prefixes (the cache stores the unmasked rows)
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < max_length:
            raise ValueError(f"max_length={max_length} exceeds the tokenizer's model_max_length={limit}")
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)
        key = f"{model_key or type(model).__name__}|max_length={max_length}"
        self.cache = EmbeddingCache(cache_dir, key) if cache_dir is not None else None

    @classmethod
    def from_local(cls, path: str | os.PathLike, max_length: int = 77, *, cache_dir: str | os.PathLike | None = None,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> HFTextEncoder:
        """Load tokenizer + encoder from a local directory (``save_pretrained`` layout, never the Hub).

        T5-family configs load only the encoder; CLIP loads the text tower; anything else ``AutoModel``.
        The cache (if ``cache_dir``) is keyed by the resolved model path, ``max_length`` and the text.
        """
        d = require_local_dir(path, "HFTextEncoder.from_local")
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(d), local_files_only=True)
        if config.model_type in _T5_CLASSES:
            klass = getattr(transformers, _T5_CLASSES[config.model_type])
        elif config.model_type in ("clip", "clip_text_model"):
            klass = transformers.CLIPTextModel
        else:
            klass = transformers.AutoModel
        major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
        model = klass.from_pretrained(str(d), local_files_only=True, **{dtype_kw: dtype}).to(device)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        return cls(model, tokenizer, max_length, cache_dir=cache_dir, model_key=str(d.resolve()))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _run(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        mask = enc["attention_mask"].to(self.device).bool()
        out = self.model(input_ids=enc["input_ids"].to(self.device), attention_mask=mask.long())
        tokens = out.last_hidden_state.float() * mask[..., None]
        return tokens, mask

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _check_texts(texts)
        if not texts:
            return (torch.zeros(0, self.max_length, self.dim, device=self.device),
                    torch.zeros(0, self.max_length, dtype=torch.bool, device=self.device))
        if self.cache is None:
            return self._run(texts)
        tokens = torch.zeros(len(texts), self.max_length, self.dim, device=self.device)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.bool, device=self.device)
        cached = [self.cache.get(t) for t in texts]
        todo = sorted({t for t, c in zip(texts, cached) if c is None})
        fresh = {}
        if todo:
            tok, m = self._run(todo)
            for i, t in enumerate(todo):
                fresh[t] = tok[i, : int(m[i].sum())]
                self.cache.put(t, fresh[t])
        for i, (t, c) in enumerate(zip(texts, cached)):
            row = (c if c is not None else fresh[t]).to(self.device)
            tokens[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return tokens, mask
