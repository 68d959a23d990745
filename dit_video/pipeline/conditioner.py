"""From captions (or labels) to VideoDiT keyword arguments: the one place that knows the conditioning kind.

    model.conditioning  condition.text_encoder   what a caption becomes
    ------------------  ----------------------   -------------------------------------------------
    none                none                     nothing (the caption is ignored)
    class               none                     labels [B] (caption -> index in class_names)
    text                tiny                     captions -> learned TinyTextEncoder -> text [B, L, Dt] + mask
                                                 (the encoder trains with the model, inside ConditionedDiT)
    text                hf                       captions -> frozen Hugging Face encoder -> text + mask

The null condition (classifier-free guidance) is an all-False text mask (the model then attends to
no text) or the null class ``num_classes``. Condition dropout during training applies exactly that
null to a random subset of the batch.

:class:`ConditionedDiT` is the module DeepSpeed trains: the VideoDiT and, when it is learned, the
text encoder, so both are optimised, checkpointed, (under ZeRO-3) partitioned and EMA-averaged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..config import VideoDiTConfig
from ..models import VideoDiT
from .config import ConditionConfig, check_conditioning, tiny_dim


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


class Conditioner:
    """Captions or labels -> model kwargs, for a (model config, condition config) pair; see the module docstring.

    ``text_encoder``: a frozen encoder to use (``hf``); built from ``condition.text_path`` when omitted.
    The learned (``tiny``) encoder is not held here: it lives in the :class:`ConditionedDiT`
    (:meth:`new_learned_encoder` builds a fresh one).
    """

    def __init__(self, model: VideoDiTConfig, condition: ConditionConfig, *, device: torch.device | str = "cpu",
                 text_encoder: Any = None):
        self.validate(model, condition)
        self.model_cfg, self.cfg, self.device = model, condition, torch.device(device)
        self.kind = model.conditioning
        self.learned = condition.text_encoder == "tiny"
        self.frozen_text_encoder = text_encoder
        if self.kind == "text" and not self.learned and text_encoder is None:
            from ..encoders import HFTextEncoder

            self.frozen_text_encoder = HFTextEncoder.from_local(condition.text_path, condition.max_length,
                                                                device=device, cache_dir=condition.embedding_cache)

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def validate(model: VideoDiTConfig, condition: ConditionConfig) -> None:
        """Do the model and condition sections agree? ``ValueError`` naming the keys."""
        check_conditioning(model, condition)

    def new_learned_encoder(self) -> nn.Module | None:
        """A freshly initialised learned text encoder (``tiny``), or None when the encoder is not learned."""
        if not (self.kind == "text" and self.learned):
            return None
        from ..encoders import TinyTextEncoder

        c = self.cfg
        return TinyTextEncoder(list(c.tiny_vocab) or synthetic_vocab(), dim=tiny_dim(self.model_cfg, c),
                               max_length=c.max_length, layers=c.tiny_layers, heads=c.tiny_heads).to(self.device)

    # ------------------------------------------------------------------ captions and labels
    def labels(self, captions: list[str]) -> torch.Tensor:
        """Captions of a class-conditioned dataset -> class ids (a caption must be one of ``class_names``)."""
        index = {name: i for i, name in enumerate(self.cfg.class_names)}
        missing = sorted({c for c in captions if c not in index})
        if missing:
            raise ValueError(f"captions {missing[:5]} are not in condition.class_names "
                             f"({len(self.cfg.class_names)} names)")
        return torch.tensor([index[c] for c in captions], dtype=torch.long, device=self.device)

    def prompts_or_labels(self, names: list[str]) -> tuple[list[str] | None, list[int] | None]:
        """A recipe's ``sample.prompts`` -> what :meth:`check` takes: prompts, class ids (by name), or neither."""
        if self.kind == "text":
            return list(names), None
        if self.kind == "class":
            return None, self.labels(list(names)).tolist()
        return None, None

    def check(self, prompts: list[str] | None, labels: list[int] | None) -> int:
        """Validate prompts/labels against the model's conditioning; returns the batch size."""
        mc = self.model_cfg
        if self.kind == "text":
            if labels:
                raise ValueError("this model is text-conditioned: pass prompts, not labels")
            if not prompts:
                raise ValueError("this model is text-conditioned: give at least one prompt (--prompt)")
            return len(prompts)
        if self.kind == "class":
            if prompts:
                names = self.cfg.class_names
                hint = f" (classes: {names[:8]}{'...' if len(names) > 8 else ''})" if names else ""
                raise ValueError(f"this model is class-conditioned ({mc.num_classes} classes), it takes no prompt: "
                                 f"pass --label with a class id in [0, {mc.num_classes}){hint}")
            if not labels:
                raise ValueError(f"this model is class-conditioned: give --label (0..{mc.num_classes - 1})")
            bad = [x for x in labels if not 0 <= x < mc.num_classes]
            if bad:
                raise ValueError(f"labels {bad} out of range [0, {mc.num_classes})")
            return len(labels)
        if prompts or labels:
            raise ValueError("this model is unconditional: it takes no prompt and no label")
        return 1

    # ------------------------------------------------------------------ model kwargs
    def dropout(self, batch: int, p: float, generator: torch.Generator | None,
                batch_slice: tuple[int, int] | None = None, given: torch.Tensor | None = None,
                p_given: float | None = None) -> torch.Tensor | None:
        """bool [batch]: which samples get the null condition (classifier-free guidance training), or None.

        ``batch_slice=(global_batch, offset)``: drawn for the global batch and sliced (see
        ``Diffusion.training_loss``), so a clip's dropout does not depend on the number of ranks.
        ``given`` bool [global_batch]: the clips trained with given frames, which drop with ``p_given``
        (``DiffusionConfig.cond_cfg_dropout``) instead of ``p``.
        """
        gb, lo = (batch, 0) if batch_slice is None else batch_slice
        per_clip = torch.full((gb,), float(p))
        if given is not None and p_given is not None:
            if given.shape != (gb,):
                raise ValueError(f"given must be bool [{gb}] (the global batch), got {tuple(given.shape)}")
            per_clip = torch.where(given.cpu(), float(p_given), per_clip)
        if not bool((per_clip > 0).any()) or self.kind == "none":
            return None
        return (torch.rand(gb, generator=generator) < per_clip)[lo:lo + batch].to(self.device)

    def training_kwargs(self, captions: list[str], drop: torch.Tensor | None = None,
                        text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """Kwargs of :class:`ConditionedDiT` for one training batch (``drop``: see :meth:`dropout`).

        ``text``/``text_mask``: precomputed frozen-encoder states (e.g. from latent shards), used as is.
        """
        kw: dict[str, Any] = {}
        if self.kind == "text":
            if text is not None:
                kw["text"] = text.to(self.device)
                kw["text_mask"] = None if text_mask is None else text_mask.to(self.device, torch.bool)
            elif self.learned:
                kw["captions"] = list(captions)
            else:
                with torch.no_grad():
                    t, m = self.frozen_text_encoder.encode(list(captions))
                kw["text"], kw["text_mask"] = t.to(self.device), m.to(self.device)
        elif self.kind == "class":
            kw["labels"] = self.labels(list(captions))
        if drop is not None and kw:
            kw["drop"] = drop
        return kw

    @torch.no_grad()
    def sampling_kwargs(self, model: ConditionedDiT, prompts: list[str] | None, labels: list[int] | None
                        ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(conditional, null) kwargs for sampling, encoded once; null is None for an unconditional model."""
        self.check(prompts, labels)
        if self.kind == "text":
            enc = model.text_encoder if self.learned else self.frozen_text_encoder
            if enc is None:
                raise ValueError("this model was trained with a learned text encoder, but it holds none")
            text, mask = enc.encode(list(prompts))
            text, mask = text.to(self.device), mask.to(self.device)
            # an empty caption is no caption: the null condition that condition dropout trained (all tokens masked)
            empty = torch.tensor([not p.strip() for p in prompts], device=mask.device)
            mask = mask & ~empty[:, None]
            return {"text": text, "text_mask": mask}, {"text": text, "text_mask": torch.zeros_like(mask)}
        if self.kind == "class":
            y = torch.tensor(labels, dtype=torch.long, device=self.device)
            return {"labels": y}, {"labels": torch.full_like(y, self.model_cfg.num_classes)}
        return {}, None
