"""Weight interop: diffusers' ``LatteTransformer3DModel`` and the original Latte checkpoints -> :class:`VideoDiT`.

Two source layouts are supported.

**diffusers Latte** (:func:`from_diffusers_latte`, Latte-1 / PixArt-style). adaLN-single (one shared
``t_block`` + a per-block ``scale_shift_table``), text cross-attention in the spatial blocks, a caption
projection, separate ``to_q``/``to_k``/``to_v`` (fused into our ``qkv`` / ``kv``), a fixed sincos
temporal table added once before the first temporal block, and the 2D sincos table built with diffusers'
``base_size`` / ``interpolation_scale`` so that other resolutions are interpolated. The final layer's
shift/scale come from the *un-projected* embedded timestep. Inputs map one to one::

    diffusers: model(hidden_states [B, C, F, H, W], timestep [B], encoder_hidden_states [B, L, Dt],
                     encoder_attention_mask=...)                  -> .sample [B, C_out, F, H, W]
    ours:      model(x [B, C, T, H, W], timestep [B], text=[B, L, Dt], text_mask=[B, L] bool)

diffusers' Latte forward hands ``encoder_attention_mask`` to every spatial block, whose batch is
``B * F``: a ``[B, L]`` mask fails there for F > 1 (and its pipeline never passes one). To run
diffusers with the mask we take, repeat it per frame: :func:`diffusers_latte_text_mask`.

**original Latte repository** (:func:`from_latte_checkpoint`, class-conditional or unconditional, DiT
style). Interleaved ``blocks.{2i}`` (spatial) / ``blocks.{2i+1}`` (temporal), fused ``attn.qkv``,
per-block ``adaLN_modulation`` (adaLN-Zero), ``x_embedder`` (a Conv2d patch embedding),
``t_embedder``, ``y_embedder.embedding_table`` (with the null class as its last row), ``final_layer``
and the fixed ``pos_embed`` / ``temp_embed`` tables stored in the state dict. **Latte's input is
``[B, F, C, H, W]`` and so is its output; ours is ``[B, C, T, H, W]``**: call our model with
``x.permute(0, 2, 1, 3, 4)`` and permute the result back the same way.

Known differences, documented rather than hidden:

* diffusers' final LayerNorm uses eps 1e-6 whatever ``norm_eps`` is; ours uses ``norm_eps`` everywhere.
  Latte-1 has ``norm_eps=1e-6`` (exact); other values differ by ~1e-6 relative.
* diffusers skips the temporal table for a single frame (``num_frame == 1``); ours adds its row 0. With
  ``enable_temporal_attentions=False`` diffusers skips the temporal blocks, which we have no switch for.
  Both concern image (one-frame) inputs only.
* a caption whose tokens are *all* masked: diffusers (additive -1e4 bias) attends uniformly to every
  token; ours returns 0 from the cross-attention (the null condition). Partially masked captions agree.
* unsupported diffusers options raise a ``ValueError`` naming them (GEGLU feed-forward, exact GELU,
  LayerNorms with non-identity affine weights, no cross-attention, adaLN variants other than single).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..config import VideoDiTConfig
from .embeddings import sincos_1d, sincos_2d
from .videodit import VideoDiT

log = logging.getLogger("dit_video.models.convert")

__all__ = [
    "config_from_diffusers_latte",
    "diffusers_latte_text_mask",
    "from_diffusers_latte",
    "from_latte_checkpoint",
    "latte_expected_shapes",
    "latte_state_dict_to_videodit",
]


# ============================================================================ diffusers Latte
def _cfg_get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def config_from_diffusers_latte(config: Any, **overrides: Any) -> VideoDiTConfig:
    """Our :class:`VideoDiTConfig` for a diffusers ``LatteTransformer3DModel`` config (or model).

    ``config`` may be the model itself, its ``.config`` (a FrozenDict) or a plain dict such as a parsed
    ``config.json``. ``overrides`` (e.g. ``kernel_backend="torch"``, ``gradient_checkpointing=True``) are
    applied last. Raises ``ValueError`` for options our architecture cannot represent.
    """
    if hasattr(config, "config") and not isinstance(config, Mapping):
        config = config.config
    heads = _cfg_get(config, "num_attention_heads", 16)
    head_dim = _cfg_get(config, "attention_head_dim", 88)
    d = heads * head_dim
    problems = []
    norm_type = _cfg_get(config, "norm_type", "layer_norm")
    if norm_type != "ada_norm_single":
        problems.append(f"norm_type={norm_type!r} (only 'ada_norm_single', the Latte-1 layout, converts)")
    act = _cfg_get(config, "activation_fn", "geglu")
    if act != "gelu-approximate":
        problems.append(f"activation_fn={act!r} (our MLP is Linear -> GELU(tanh) -> Linear: 'gelu-approximate')")
    cross = _cfg_get(config, "cross_attention_dim", None)
    if cross != d:
        problems.append(f"cross_attention_dim={cross!r} (must equal the width {d}: the caption projection "
                        "feeds the spatial blocks' cross-attention)")
    caption = _cfg_get(config, "caption_channels", None)
    if not caption:
        problems.append(f"caption_channels={caption!r} (must be the text encoder's width)")
    if problems:
        raise ValueError("cannot convert this LatteTransformer3DModel config: " + "; ".join(problems))

    in_ch = _cfg_get(config, "in_channels")
    out_ch = _cfg_get(config, "out_channels") or in_ch
    sample = int(_cfg_get(config, "sample_size", 64))
    patch = int(_cfg_get(config, "patch_size"))
    learn_sigma = out_ch == 2 * in_ch  # diffusers' Latte pipeline keeps the first half of such an output
    fields = dict(
        in_channels=in_ch,
        out_channels=None if learn_sigma else out_ch,
        learn_sigma=learn_sigma,
        num_frames=int(_cfg_get(config, "video_length", 16)),
        sample_size=[sample, sample],
        patch_size=[1, patch, patch],
        hidden_size=d,
        depth=2 * int(_cfg_get(config, "num_layers", 1)),
        num_heads=heads,
        mlp_ratio=4.0,
        attention="factorized",
        positions="sincos",
        temporal_position="first_temporal",  # Latte adds its frame table once, before the first temporal block
        modulation="adaln_single",
        conditioning="text",
        caption_channels=int(caption),
        norm_eps=float(_cfg_get(config, "norm_eps", 1e-5)),
        frequency_embedding_size=256,
        pos_base_size=sample // patch,
        pos_interpolation_scale=float(max(sample // 64, 1)),
    )
    fields.update(overrides)
    return VideoDiTConfig.from_dict(fields)


def diffusers_latte_text_mask(text_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Our ``text_mask [B, L]`` (True = attend) as the ``encoder_attention_mask`` diffusers' Latte accepts.

    Its spatial blocks run on a batch of ``B * F`` frames, so the mask is repeated per frame and given in
    diffusers' documented bias format ``[B * F, 1, L]`` (0 = keep, -10000 = discard).
    """
    keep = text_mask.to(torch.bool).repeat_interleave(num_frames, dim=0)[:, None, :]
    return torch.zeros(keep.shape, dtype=torch.float32, device=keep.device).masked_fill(~keep, -10000.0)


def _diffusers_rules(cfg: VideoDiTConfig) -> list[tuple[str, list[str], bool]]:
    """(our key, diffusers source keys, optional) for the Latte-1 layout; several sources are concatenated.

    ``optional`` marks the attention biases, absent with ``attention_bias=False`` (then zeros).
    """
    rules: list[tuple[str, list[str], bool]] = [
        ("x_embedder.proj.weight", ["pos_embed.proj.weight"], False),
        ("x_embedder.proj.bias", ["pos_embed.proj.bias"], False),
        ("final_scale_shift_table", ["scale_shift_table"], False),
    ]
    for p in ("weight", "bias"):
        rules += [
            (f"t_embedder.mlp.0.{p}", [f"adaln_single.emb.timestep_embedder.linear_1.{p}"], False),
            (f"t_embedder.mlp.2.{p}", [f"adaln_single.emb.timestep_embedder.linear_2.{p}"], False),
            (f"caption_projection.fc1.{p}", [f"caption_projection.linear_1.{p}"], False),
            (f"caption_projection.fc2.{p}", [f"caption_projection.linear_2.{p}"], False),
            (f"t_block.1.{p}", [f"adaln_single.linear.{p}"], False),
            (f"final_linear.{p}", [f"proj_out.{p}"], False),
        ]
    for i in range(cfg.depth // 2):
        for src, dst, cross in ((f"transformer_blocks.{i}", f"blocks.{2 * i}", True),
                                (f"temporal_transformer_blocks.{i}", f"blocks.{2 * i + 1}", False)):
            rules.append((f"{dst}.scale_shift_table", [f"{src}.scale_shift_table"], False))
            for p in ("weight", "bias"):
                opt = p == "bias"
                rules += [
                    (f"{dst}.attn.qkv.{p}", [f"{src}.attn1.to_{n}.{p}" for n in "qkv"], opt),
                    (f"{dst}.attn.proj.{p}", [f"{src}.attn1.to_out.0.{p}"], False),
                    (f"{dst}.mlp.fc1.{p}", [f"{src}.ff.net.0.proj.{p}"], False),
                    (f"{dst}.mlp.fc2.{p}", [f"{src}.ff.net.2.{p}"], False),
                ]
                if cross:
                    rules += [
                        (f"{dst}.cross.q.{p}", [f"{src}.attn2.to_q.{p}"], opt),
                        (f"{dst}.cross.kv.{p}", [f"{src}.attn2.to_k.{p}", f"{src}.attn2.to_v.{p}"], opt),
                        (f"{dst}.cross.proj.{p}", [f"{src}.attn2.to_out.0.{p}"], False),
                    ]
    return rules


def diffusers_latte_state_dict_to_videodit(sd: Mapping[str, torch.Tensor], cfg: VideoDiTConfig) -> dict:
    """Rename/fuse a diffusers Latte state dict into ours (for ``cfg`` from :func:`config_from_diffusers_latte`).

    ``to_q``/``to_k``/``to_v`` are concatenated into our fused ``qkv`` (``[3, heads, head_dim]`` output
    order, which is also diffusers' head split), ``attn2.to_k``/``to_v`` into ``cross.kv``; the Conv2d patch
    weight becomes a Linear over (c, ph, pw). Every source tensor must be used: missing or leftover keys
    (an option we do not model) raise ``ValueError`` listing them.
    """
    out: dict[str, torch.Tensor | None] = {}
    used: set[str] = set()
    missing: list[str] = []
    for dst, srcs, optional in _diffusers_rules(cfg):
        present = [s for s in srcs if s in sd]
        if not present and optional:  # attention_bias=False: a bias of zeros is the same map
            out[dst] = None  # filled below once the weight's width is known
            continue
        if len(present) != len(srcs):
            missing += [s for s in srcs if s not in sd]
            continue
        used.update(srcs)
        out[dst] = torch.cat([sd[s] for s in srcs], 0) if len(srcs) > 1 else sd[srcs[0]]
    # LayerNorm affine parameters (norm_elementwise_affine=True) convert only when they are the identity.
    for k in sorted(k for k in sd if re.fullmatch(r"(temporal_)?transformer_blocks\.\d+\.norm[123]\.(weight|bias)", k)):
        used.add(k)
        ident = 1.0 if k.endswith("weight") else 0.0
        if not torch.equal(sd[k], torch.full_like(sd[k], ident)):
            raise ValueError(f"{k} is not the identity: our blocks' LayerNorms have no affine parameters "
                             "(norm_elementwise_affine=True with trained weights does not convert)")
    unexpected = sorted(set(sd) - used - {"pos_embed.pos_embed", "temp_pos_embed"})  # tables: recomputed
    if missing or unexpected:
        raise ValueError(f"diffusers Latte state dict does not match the Latte-1 layout with {cfg.depth // 2} "
                         f"layers: missing keys {sorted(missing)}; unexpected keys {unexpected}")
    w = out["x_embedder.proj.weight"]
    out["x_embedder.proj.weight"] = w.reshape(w.shape[0], -1)  # Conv2d [D, C, p, p] -> Linear over (c, 1, p, p)
    for k, v in out.items():
        if v is None:
            width = out[k[: -len("bias")] + "weight"].shape[0]
            out[k] = torch.zeros(width, dtype=w.dtype)
    return out


def _load_strict(model: VideoDiT, sd: Mapping[str, torch.Tensor], what: str) -> VideoDiT:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{what} does not match the model ({model.config.depth} blocks, width "
                         f"{model.config.hidden_size}): missing keys {missing}; unexpected keys {unexpected}; "
                         f"shape mismatches {shapes}")
    model.load_state_dict({k: v.detach().to(own[k].dtype) for k, v in sd.items()}, strict=True)
    return model


def from_diffusers_latte(model: Any, **overrides: Any) -> VideoDiT:
    """A :class:`VideoDiT` computing what a diffusers ``LatteTransformer3DModel`` computes (Latte-1 layout).

    ``overrides`` go to the config (e.g. ``kernel_backend``, ``gradient_checkpointing``). The result is in
    eval mode on the CPU in fp32 (move/cast it as needed). See the module docstring for the input mapping.
    """
    cfg = config_from_diffusers_latte(model.config, **overrides)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    ours = VideoDiT(cfg)
    return _load_strict(ours, diffusers_latte_state_dict_to_videodit(sd, cfg), "converted diffusers Latte").eval()


# ============================================================================ original Latte
_LATTE_BLOCK_KEYS = ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "mlp.fc1.weight",
                     "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "adaLN_modulation.1.weight",
                     "adaLN_modulation.1.bias")  # the same names in both layouts
_LATTE_TOP_MAP = {  # original Latte key -> ours
    "x_embedder.proj.weight": "x_embedder.proj.weight",  # Conv2d [D, C, p, p] -> Linear over (c, 1, p, p)
    "x_embedder.proj.bias": "x_embedder.proj.bias",
    "t_embedder.mlp.0.weight": "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias": "t_embedder.mlp.0.bias",
    "t_embedder.mlp.2.weight": "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias": "t_embedder.mlp.2.bias",
    "y_embedder.embedding_table.weight": "y_embedder.table.weight",
    "final_layer.linear.weight": "final_linear.weight", "final_layer.linear.bias": "final_linear.bias",
    "final_layer.adaLN_modulation.1.weight": "final_adaLN.1.weight",
    "final_layer.adaLN_modulation.1.bias": "final_adaLN.1.bias",
}


def _unwrap_checkpoint(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, or a Latte training checkpoint ``{"ema": ..., "model": ..., ...}``."""
    if "ema" in state_dict and isinstance(state_dict["ema"], Mapping):
        log.info("from_latte_checkpoint: using the checkpoint's 'ema' weights (as Latte's sampler does)")
        state_dict = state_dict["ema"]
    elif "model" in state_dict and isinstance(state_dict["model"], Mapping):
        log.info("from_latte_checkpoint: using the checkpoint's 'model' weights")
        state_dict = state_dict["model"]
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def latte_expected_shapes(cfg: VideoDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an original-Latte state dict for ``cfg`` with its shape (``pos_embed``/``temp_embed`` too)."""
    d, (pt, ph, pw) = cfg.hidden_size, cfg.patch_size
    gh, gw = cfg.sample_size[0] // ph, cfg.sample_size[1] // pw
    mlp, n_out = int(d * cfg.mlp_ratio), pt * ph * pw * cfg.out_dim
    shapes: dict[str, tuple[int, ...]] = {
        "x_embedder.proj.weight": (d, cfg.in_channels, ph, pw), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, cfg.frequency_embedding_size), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "final_layer.linear.weight": (n_out, d), "final_layer.linear.bias": (n_out,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "pos_embed": (1, gh * gw, d), "temp_embed": (1, cfg.num_frames // pt, d),
    }
    if cfg.conditioning == "class":
        shapes["y_embedder.embedding_table.weight"] = (cfg.num_classes + 1, d)
    block = {"attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,), "attn.proj.weight": (d, d),
             "attn.proj.bias": (d,), "mlp.fc1.weight": (mlp, d), "mlp.fc1.bias": (mlp,), "mlp.fc2.weight": (d, mlp),
             "mlp.fc2.bias": (d,), "adaLN_modulation.1.weight": (6 * d, d), "adaLN_modulation.1.bias": (6 * d,)}
    for i in range(cfg.depth):
        shapes.update({f"blocks.{i}.{k}": s for k, s in block.items()})
    return shapes


def latte_state_dict_to_videodit(sd: Mapping[str, torch.Tensor], cfg: VideoDiTConfig) -> dict[str, torch.Tensor]:
    """Check an original-Latte state dict against ``cfg`` and rename it into ours.

    Missing, unexpected or mis-shaped keys raise ``ValueError`` listing them (in Latte's names).
    ``pos_embed`` / ``temp_embed`` are compared with the sincos tables our model computes for ``cfg`` (they
    are fixed, not learned, in Latte) and dropped; a table that differs raises ``ValueError``.
    """
    want = latte_expected_shapes(cfg)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = [f"{k}: {tuple(sd[k].shape)}, expected {want[k]}" for k in sorted(set(sd) & set(want))
              if tuple(sd[k].shape) != want[k]]
    if missing or unexpected or shapes:
        hint = ""
        if cfg.conditioning == "class" and "y_embedder.embedding_table.weight" not in sd:
            hint = " (no y_embedder: an unconditional checkpoint? pass conditioning='none', num_classes=0)"
        elif cfg.conditioning != "class" and "y_embedder.embedding_table.weight" in sd:
            hint = " (a y_embedder: a class-conditional checkpoint? pass conditioning='class', num_classes=N)"
        raise ValueError(f"Latte checkpoint does not match the config ({cfg.depth} blocks, width {cfg.hidden_size}, "
                         f"conditioning={cfg.conditioning!r}): missing keys {missing}; unexpected keys {unexpected}; "
                         f"shape mismatches {shapes}{hint}")
    for name in ("pos_embed", "temp_embed"):
        _check_latte_table(name, sd[name], cfg)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k in _LATTE_TOP_MAP:
            out[_LATTE_TOP_MAP[k]] = v.reshape(v.shape[0], -1) if k == "x_embedder.proj.weight" else v
        elif k.startswith("blocks."):
            out[k] = v  # blocks.{2i} spatial / blocks.{2i+1} temporal: our order and names
    return out


def _check_latte_table(name: str, table: torch.Tensor, cfg: VideoDiTConfig) -> None:
    d = cfg.hidden_size
    if name == "pos_embed":
        gh, gw = cfg.sample_size[0] // cfg.patch_size[1], cfg.sample_size[1] // cfg.patch_size[2]
        want = sincos_2d(d, (gh, gw), cfg.pos_base_size or gh, cfg.pos_interpolation_scale)
    else:
        want = sincos_1d(d, torch.arange(cfg.num_frames // cfg.patch_size[0]).numpy())
    err = (table.detach().float().cpu() - torch.from_numpy(want).float()[None]).abs().max().item()
    if err > 1e-4:
        raise ValueError(f"{name} differs from the fixed sincos table our model computes (max abs diff {err:.3g}): "
                         "a learned or differently built table does not convert")


def from_latte_checkpoint(state_dict: Mapping[str, Any], preset: str = "XL/2", **overrides: Any) -> VideoDiT:
    """Load an original Latte repository checkpoint (``models/latte.py`` layout) into a :class:`VideoDiT`.

    ``preset`` gives the size (``S/2`` .. ``XL/2``: class-conditional, 101 UCF classes, learned sigma);
    ``overrides`` change config fields, e.g. ``conditioning="none", num_classes=0`` for the unconditional
    (FaceForensics / SkyTimelapse / Taichi) checkpoints. ``sample_size`` and ``num_frames`` are read from
    the stored ``pos_embed`` / ``temp_embed`` unless overridden. ``state_dict`` may also be a training
    checkpoint holding ``"ema"`` (preferred) or ``"model"``. The result is in eval mode.

    Latte takes and returns ``[B, F, C, H, W]``; ours is ``[B, C, T, H, W]``::

        latte(x, t, y) == ours(x.permute(0, 2, 1, 3, 4), t, labels=y).permute(0, 2, 1, 3, 4)

    Missing, unexpected or mis-shaped keys raise ``ValueError`` listing them.
    """
    sd = _unwrap_checkpoint(state_dict)
    base = VideoDiTConfig.from_preset(preset, **overrides)
    inferred: dict[str, Any] = {}
    if "pos_embed" in sd and "sample_size" not in overrides:
        n = sd["pos_embed"].shape[-2]
        g = math.isqrt(n)
        if g * g == n:  # Latte's grid is square
            inferred["sample_size"] = [g * base.patch_size[1], g * base.patch_size[2]]
    if "temp_embed" in sd and "num_frames" not in overrides:
        inferred["num_frames"] = int(sd["temp_embed"].shape[-2]) * base.patch_size[0]
    cfg = VideoDiTConfig.from_preset(preset, **{**overrides, **inferred}) if inferred else base
    problems = [f"{k}={getattr(cfg, k)!r} (Latte uses {v!r})" for k, v in
                (("modulation", "adaln_zero"), ("attention", "factorized"), ("positions", "sincos"),
                 ("qk_norm", False), ("pos_interpolation_scale", 1.0)) if getattr(cfg, k) != v]
    if cfg.conditioning == "text":
        problems.append("conditioning='text' (this converter reads the class-conditional / unconditional layout)")
    if cfg.patch_size[0] != 1:
        problems.append(f"patch_size={cfg.patch_size} (Latte patches frames one by one: pt must be 1)")
    if problems:
        raise ValueError("from_latte_checkpoint: the config does not describe a Latte model: " + "; ".join(problems))
    model = VideoDiT(cfg)
    return _load_strict(model, latte_state_dict_to_videodit(sd, cfg), "converted Latte checkpoint").eval()
