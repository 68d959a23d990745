"""On-disk cache of text embeddings, one safetensors file per (model, max_length, text)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch


class EmbeddingCache:
    """``root/<model key>/<ab>/<text hash>.safetensors`` holding ``tokens`` [n, D] (the unmasked rows) and
    ``length``. ``model_key`` should identify the weights and the tokenization (path, max_length).
    Writes are atomic (temp file + rename), so concurrent workers and crashes never leave a torn file.
    """

    def __init__(self, root: str | os.PathLike, model_key: str):
        self.model_key = model_key
        self.dir = Path(root).expanduser() / hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    def path(self, text: str) -> Path:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.dir / h[:2] / f"{h}.safetensors"

    def get(self, text: str) -> torch.Tensor | None:
        """The cached unmasked token states [n, D] of ``text``, or None."""
        from safetensors.torch import load_file

        p = self.path(text)
        if not p.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(str(p))["tokens"]

    def put(self, text: str, tokens: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path(text)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"tokens": tokens.detach().float().cpu().contiguous()}, tmp)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
