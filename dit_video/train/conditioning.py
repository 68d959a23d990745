"""From captions to model conditions: encoders, condition dropout, and the module DeepSpeed trains.

:class:`ConditionedDiT` wraps the VideoDiT and, when it is learned (the demo's tiny encoder), the
text encoder, so that DeepSpeed optimises, checkpoints and (under ZeRO-3) partitions both, and
the EMA covers both. A frozen Hugging Face encoder stays outside; its states are passed in.

Condition dropout (classifier-free guidance): a dropped text caption gets an all-False mask
(the model treats it as no text); a dropped label becomes the null class ``num_classes``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..config import VideoDiTConfig
from ..models import VideoDiT
from .config import ConditionConfig, VAEConfig


class ConditionedDiT(nn.Module):
    """``forward(x_t, t, captions=..., drop=..., cond_mask=...)`` -> prediction with x_t's channels."""

    def __init__(self, dit: VideoDiT, text_encoder: nn.Module | None = None):
        super().__init__()
        self.dit = dit
        self.text_encoder = text_encoder  # learned encoders only

    @property
    def config(self) -> VideoDiTConfig:
        return self.dit.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, captions: list[str] | None = None,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, drop: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        if captions is not None:
            if self.text_encoder is None:
                raise ValueError("captions given but this model has no learned text encoder")
            text, text_mask = self.text_encoder(list(captions))  # a module call: ZeRO-3 gathers its weights
        if text is not None:
            text = text.to(x.dtype)
            if text_mask is None:
                text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
            if drop is not None:
                text_mask = text_mask & ~drop.to(text_mask.device)[:, None]
        if labels is not None and drop is not None:
            labels = torch.where(drop.to(labels.device), torch.full_like(labels, self.config.num_classes), labels)
        out = self.dit(x, t, text=text, text_mask=text_mask, labels=labels, cond_mask=cond_mask)
        return out[:, : x.shape[1]]  # learn_sigma: the variance channels are not trained here


def synthetic_vocab() -> list[str]:
    """Every word a caption of :mod:`dit_video.data.synthetic` can contain (the tiny encoder's default vocabulary)."""
    from ..data import synthetic

    names = [*synthetic.COLORS, *synthetic.SHAPES, *synthetic.DIRECTIONS, *synthetic.SPEEDS]
    return ["a", "an", "moving", "and", "bouncing", "back", *names]


def build_text_encoder(cond: ConditionConfig, device: torch.device | str = "cpu") -> Any:
    """``none`` -> None; ``tiny`` -> a learned ``TinyTextEncoder``; ``hf`` -> a frozen ``HFTextEncoder``."""
    if cond.text_encoder == "none":
        return None
    from .. import encoders

    if cond.text_encoder == "tiny":
        vocab = list(cond.tiny_vocab) or synthetic_vocab()
        return encoders.TinyTextEncoder(vocab, dim=cond.tiny_dim, max_length=cond.max_length,
                                        layers=cond.tiny_layers, heads=cond.tiny_heads).to(device)
    return encoders.HFTextEncoder.from_local(cond.text_path, cond.max_length, device=device,
                                             cache_dir=cond.embedding_cache)


def build_vae(vae: VAEConfig, device: torch.device | str = "cpu") -> Any:
    from .. import encoders

    if vae.kind == "identity":
        return encoders.IdentityVAE()
    kw = {} if vae.scaling_factor is None else {"scaling_factor": vae.scaling_factor}
    return encoders.DiffusersVAE.from_local(vae.path, device=device, **kw)


def labels_for(captions: list[str], class_names: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Captions of a class-conditioned dataset -> class ids (a caption must be one of ``class_names``)."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted({c for c in captions if c not in index})
    if missing:
        raise ValueError(f"captions {missing[:5]} are not in condition.class_names ({len(class_names)} names)")
    return torch.tensor([index[c] for c in captions], dtype=torch.long, device=device)
