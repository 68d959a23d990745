"""VideoDiT: a spatiotemporal, patchified diffusion transformer for video.

    x [B, C, T, H, W] --PatchEmbed3D--> tokens [B, T', S, D] (+ sincos positions, or 3D RoPE)
      N x block: spatial (attend over S within each frame; + text cross-attention)
                 temporal (attend over T' at each position), alternating
      each block:  h = adaLN(x); x = x + g1 * Attn(h)  [+ CrossAttn(x, text)]
                   x, h = gated_residual_adaln(...);  x = x + g2 * MLP(h)
      final adaLN + linear --unpatchify--> [B, C_out, T, H, W]

Tokens stay ``[B, T', S, D]`` through the whole trunk. Both attention kinds read views of one
fused QKV projection ``[B, T', S, 3, H, Dh]``: the spatial view has batch dims (B, T') and
sequence S, the temporal view batch dims (B, S) and sequence T'. No block transposes q, k, v or
o itself; the fused kernels read the strided views and write o in token layout.

Kernel backend: ``config.kernel_backend`` (or :meth:`VideoDiT.set_backend`) is applied to every
fused op of a forward (and of its recomputation under gradient checkpointing) as a
``dit_video.kernels.use_backend`` context; ``"auto"`` leaves the caller's context in charge.

Sequence parallelism (:meth:`VideoDiT.set_sequence_parallel`, see ``dit_video.parallel.sequence``):
this rank embeds only its latent frames, switches to a split by positions around each temporal
block (``to_positions`` / ``to_frames``), or by heads inside full attention, and gathers the
output along frames. Without it (the default) the model is a plain single-device module.
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..config import VideoDiTConfig
from ..kernels import (
    adaln_linear,
    adaln_mlp,
    adaln_modulate,
    attention,
    current_backend,
    gated_linear,
    gated_residual_adaln,
    gelu_tanh,
    rope3d,
    use_backend,
)
from .embeddings import (
    CaptionProjection,
    LabelEmbedder,
    PatchEmbed3D,
    TimestepEmbedder,
    rope3d_tables,
    sincos_1d,
    sincos_2d,
    unpatchify,
)


def _bcast(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B, D] or [B, T', D] -> broadcastable against tokens [B, T', S, D]."""
    return m.reshape(m.shape[:-1] + (1,) * (x.dim() - m.dim()) + m.shape[-1:])


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(dim // heads, eps=eps) if qk_norm else None

    def forward(self, h: torch.Tensor, kind: str, rope: tuple[torch.Tensor, torch.Tensor] | None,
                sp=None) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(h), kind, rope, sp))

    def attend(self, qkv: torch.Tensor, kind: str, rope: tuple[torch.Tensor, torch.Tensor] | None,
               sp=None) -> torch.Tensor:
        """Attention over the fused projection ``qkv [B, T', S, 3D]``; returns o ``[B, T', S, D]`` (token layout)."""
        b, t, s, d3 = qkv.shape
        d = d3 // 3
        q, k, v = qkv.view(b, t, s, 3, self.heads, d // self.heads).unbind(3)  # views
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = rope3d(q, *rope)
            k = rope3d(k, *rope)
        if kind == "spatial":  # batch (B, T'), sequence S
            o = attention(q, k, v)
        elif kind == "temporal":  # batch (B, S), sequence T': strided views, no copies
            o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            o = o.transpose(1, 2)
        elif sp is None:  # full: one sequence of T'*S tokens (a view: T' and S are adjacent)
            o = attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2))
        else:  # full, sequence parallel (Ulysses): every token, a share of the heads
            q, k, v = (sp.seq_to_heads(x.flatten(1, 2)) for x in (q, k, v))
            o = sp.heads_to_seq(attention(q, k, v))
        return o.reshape(b, t, s, d)


class CrossAttention(nn.Module):
    """Queries from the video tokens of each frame, keys/values from the text tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, s, d = x.shape
        hd = d // self.heads
        q = self.q(x).view(b, t, s, self.heads, hd)
        k, v = self.kv(text).view(b, 1, text.shape[1], 2, self.heads, hd).unbind(3)  # [B, 1, L, H, Dh]
        mask = None if text_mask is None else text_mask[:, None, :]
        o = attention(q, k, v, key_padding_mask=mask)
        return self.proj(o.reshape(b, t, s, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


def _checkpointed(fn, *args):
    """``fn(*args)`` under non-reentrant activation checkpointing: only ``args`` are kept, the rest is recomputed
    in backward, with the kernel backend of this forward (backward runs outside its ``use_backend`` context)."""
    if torch.compiler.is_compiling():  # traced once: ops resolved now, the recomputation is in the graph
        return checkpoint(fn, *args, use_reentrant=False)
    backend = current_backend()

    def run(*a):
        with use_backend(backend):
            return fn(*a)

    return checkpoint(run, *args, use_reentrant=False)


class VideoDiTBlock(nn.Module):
    """One transformer block of kind ``spatial``, ``temporal`` or ``full``."""

    def __init__(self, cfg: VideoDiTConfig, kind: str, cross: bool):
        super().__init__()
        d = cfg.hidden_size
        self.kind = kind
        self.eps = cfg.norm_eps
        self.attn = SelfAttention(d, cfg.num_heads, cfg.qk_norm, cfg.norm_eps)
        self.cross = CrossAttention(d, cfg.num_heads) if cross else None
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.recompute = cfg.recompute
        self.single = cfg.modulation == "adaln_single"
        if self.single:  # PixArt / Latte-1: shared t_block output + a per-block table
            self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)
        else:  # DiT adaLN-Zero: a per-block projection of the conditioning vector
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def modulation(self, c: torch.Tensor) -> list[torch.Tensor]:
        if self.single:  # c is the shared 6D vector [B, (T',) 6D]
            m = self.scale_shift_table + c.unflatten(-1, (6, -1))
        else:  # c is the conditioning vector [B, (T',) D]
            m = self.adaLN_modulation(c).unflatten(-1, (6, -1))
        return list(m.unbind(-2))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope=None, text=None, text_mask=None, sp=None) -> torch.Tensor:
        if self.recompute in ("mlp", "norms"):
            return self._lean_forward(x, self.modulation(c), rope, text, text_mask, sp)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)
        h = adaln_modulate(x, shift1, scale1, eps=self.eps)
        y = self.attn(h, self.kind, rope, sp)
        if self.cross is not None:
            r = x + _bcast(gate1, x) * y
            # No caption is the null condition: like an all-masked caption, attention gives o = 0,
            # so the cross-attention output is the projection's bias.
            yc = self.cross(r, text, text_mask) if text is not None else self.cross.proj.bias.expand_as(r)
            x, h = gated_residual_adaln(r, yc, torch.ones_like(gate1), shift2, scale2, eps=self.eps)
        else:
            x, h = gated_residual_adaln(x, y, gate1, shift2, scale2, eps=self.eps)
        return x + _bcast(gate2, x) * self.mlp(h)

    def _lean_forward(self, x, mods, rope, text, text_mask, sp) -> torch.Tensor:
        """The same block through the memory-lean ops (``recompute`` "mlp" / "norms", see VideoDiTConfig)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        a, m = self.attn, self.mlp
        if self.recompute == "norms":  # saves x (not its adaLN) and o (not the projection's output)
            qkv = adaln_linear(x, shift1, scale1, a.qkv.weight, a.qkv.bias, eps=self.eps)
            r = gated_linear(x, a.attend(qkv, self.kind, rope, sp), a.proj.weight, a.proj.bias, gate1)
        else:
            r = x + _bcast(gate1, x) * a(adaln_modulate(x, shift1, scale1, eps=self.eps), self.kind, rope, sp)
        if self.cross is not None:  # no caption: the null condition, the projection's bias (see forward)
            if text is None:
                r = r + self.cross.proj.bias
            elif self.recompute == "norms" and self.training and torch.is_grad_enabled():
                r = r + _checkpointed(self.cross, r, text, text_mask)  # keeps r only: q, o, lse recomputed
            else:
                r = r + self.cross(r, text, text_mask)
        return adaln_mlp(r, shift2, scale2, gate2, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, eps=self.eps)


class VideoDiT(nn.Module):
    """Spatiotemporal DiT; see the module docstring. Build with ``VideoDiT(VideoDiTConfig(...))``."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed3D(cfg.in_channels, d, tuple(cfg.patch_size))
        self.t_embedder = TimestepEmbedder(d, cfg.frequency_embedding_size)
        self.y_embedder = LabelEmbedder(cfg.num_classes, d) if cfg.conditioning == "class" else None
        self.caption_projection = (CaptionProjection(cfg.caption_channels, d)
                                   if cfg.conditioning == "text" else None)
        self.text_pool = nn.Linear(d, d) if cfg.pooled_text else None
        if cfg.modulation == "adaln_single":
            self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        text = cfg.conditioning == "text"
        if cfg.attention == "factorized":
            kinds = ["spatial" if i % 2 == 0 else "temporal" for i in range(cfg.depth)]
        else:
            kinds = ["full"] * cfg.depth
        self.blocks = nn.ModuleList(VideoDiTBlock(cfg, k, cross=text and k != "temporal") for k in kinds)
        if cfg.modulation == "adaln_single":
            self.final_scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        else:
            self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        pt, ph, pw = cfg.patch_size
        self.final_linear = nn.Linear(d, pt * ph * pw * cfg.out_dim)
        self.kernel_backend = cfg.kernel_backend
        self.sequence_parallel = None  # a dit_video.parallel.SequenceParallel, or None
        self.initialize_weights()

    # ----------------------------------------------------------------------------- setup
    def initialize_weights(self) -> None:
        """DiT's init: xavier linears, N(0, 0.02) embeddings, zero adaLN and output (output ~ 0).

        The caption projection stays xavier (PixArt draws it from N(0, 0.02)): with N(0, 0.02) the projected text
        tokens are ~50x smaller, the zero-initialised cross-attention output gets almost no gradient, and a small
        model sits on a plateau where it ignores the caption. Measured on the demo's model at flow u = 1 (8 captions,
        batch 8, 1500 steps, learned TinyTextEncoder): x0-prediction motion / data's 0.00 and 0.00 with N(0, 0.02)
        (seeds 0, 1), 0.89, 0.93 and 0.95 with xavier (seeds 0, 1, 2).
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        if hasattr(self, "t_block"):
            nn.init.normal_(self.t_block[1].weight, std=0.02)
        for blk in self.blocks:
            if not blk.single:
                nn.init.zeros_(blk.adaLN_modulation[1].weight)
                nn.init.zeros_(blk.adaLN_modulation[1].bias)
            if blk.cross is not None:
                nn.init.zeros_(blk.cross.proj.weight)
        if hasattr(self, "final_adaLN"):
            nn.init.zeros_(self.final_adaLN[1].weight)
            nn.init.zeros_(self.final_adaLN[1].bias)
        nn.init.zeros_(self.final_linear.weight)
        nn.init.zeros_(self.final_linear.bias)

    def set_backend(self, name: str) -> VideoDiT:
        """Kernel backend for every fused op in the model ('auto', 'torch', 'triton', 'cpu', ...)."""
        from ..config import _CHOICES

        if name not in _CHOICES["kernel_backend"]:
            raise ValueError(f"unknown kernel backend {name!r}; expected one of {_CHOICES['kernel_backend']}")
        self.kernel_backend = name
        return self

    def set_sequence_parallel(self, sp) -> VideoDiT:
        """Share each clip with the other ranks of ``sp`` (a ``dit_video.parallel.SequenceParallel``; None: off)."""
        self.sequence_parallel = sp if sp is not None and sp.size > 1 else None
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------------- inputs
    def _validate(self, x, timestep, text, text_mask, labels, cond_mask):
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"x has {c} channels, the model expects in_channels={cfg.in_channels}")
        for name, size, p in (("T", t, cfg.patch_size[0]), ("H", h, cfg.patch_size[1]), ("W", w, cfg.patch_size[2])):
            if size % p:
                raise ValueError(f"{name}={size} is not divisible by the patch size {p} "
                                 f"(patch_size={cfg.patch_size})")
        if not torch.is_tensor(timestep) or tuple(timestep.shape) not in ((), (b,), (b, t)):
            got = tuple(timestep.shape) if torch.is_tensor(timestep) else type(timestep).__name__
            raise ValueError(f"timestep must be a tensor of shape [B]={(b,)} or per frame [B, T]={(b, t)}, got {got}")
        if cfg.conditioning == "text":
            if text is not None and (text.dim() != 3 or text.shape[0] != b or text.shape[2] != cfg.caption_channels):
                raise ValueError(f"text must be [B, L, caption_channels] = [{b}, L, {cfg.caption_channels}], "
                                 f"got {tuple(text.shape)}")
            if text_mask is not None and (text is None or tuple(text_mask.shape) != tuple(text.shape[:2])):
                raise ValueError(f"text_mask must be [B, L] matching text, got {tuple(text_mask.shape)}")
        elif text is not None:
            raise ValueError(f"this model has conditioning={cfg.conditioning!r}; it takes no text")
        if cfg.conditioning == "class":
            if labels is None or tuple(labels.shape) != (b,):
                raise ValueError(f"labels must be a [B]={(b,)} tensor of class ids for a class-conditioned "
                                 f"model, got {None if labels is None else tuple(labels.shape)}")
        elif labels is not None:
            raise ValueError(f"this model has conditioning={cfg.conditioning!r}; it takes no labels")
        if cond_mask is not None and (tuple(cond_mask.shape) != (b, t) or cond_mask.dtype != torch.bool):
            raise ValueError(f"cond_mask must be a bool [B, T]={(b, t)} tensor, got "
                             f"{tuple(cond_mask.shape)} {cond_mask.dtype}")

    def _frame_timesteps(self, timestep: torch.Tensor, b: int, t: int, cond_mask) -> torch.Tensor:
        """[B] or [B, T] (+ cond_mask) -> [B] or per latent frame [B, T'] (tubelet mean)."""
        if timestep.dim() == 0:
            timestep = timestep.expand(b)
        if timestep.dim() == 1 and cond_mask is None:
            return timestep
        if timestep.dim() == 1:
            timestep = timestep[:, None].expand(b, t)
        if cond_mask is not None:  # clean conditioning frames are at noise level 0
            timestep = torch.where(cond_mask, torch.zeros_like(timestep), timestep)
        pt = self.config.patch_size[0]
        return timestep.float().reshape(b, t // pt, pt).mean(-1)

    @lru_cache(maxsize=8)  # noqa: B019 - keyed by grid and device; small
    def _positions(self, grid: tuple[int, int, int], device: torch.device):
        cfg = self.config
        if cfg.positions == "rope3d":
            return None, None, rope3d_tables(grid, cfg.head_dim, cfg.rope_theta, device)
        t, h, w = grid
        base = cfg.pos_base_size or cfg.sample_size[0] // cfg.patch_size[1]
        spatial = torch.from_numpy(sincos_2d(cfg.hidden_size, (h, w), base, cfg.pos_interpolation_scale))
        temporal = torch.from_numpy(sincos_1d(cfg.hidden_size, torch.arange(t).numpy()))
        return spatial.float().to(device), temporal.float().to(device), None

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, timestep: torch.Tensor, *, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._validate(x, timestep, text, text_mask, labels, cond_mask)
        with use_backend(self.kernel_backend) if self.kernel_backend != "auto" else contextlib.nullcontext():
            return self._forward(x, timestep, text, text_mask, labels, cond_mask)

    def _forward(self, x, timestep, text, text_mask, labels, cond_mask) -> torch.Tensor:
        cfg = self.config
        b, _, t, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        grid = (t // pt, h // ph, w // pw)
        spatial_pos, temporal_pos, rope = self._positions(grid, x.device)
        sp = self.sequence_parallel
        frames = positions = slice(None)  # this rank's latent frames / positions: all of them without SP
        if sp is not None:
            sp.check(grid, cfg.num_heads, cfg.attention)
            frames, positions = sp.frames(grid[0]), sp.positions(grid[1] * grid[2])
            x = x[:, :, frames.start * pt: frames.stop * pt]

        tokens = self.x_embedder(x)  # [B, T', S, D] (T'/N frames with SP)
        if spatial_pos is not None:
            tokens = tokens + spatial_pos.to(tokens.dtype)
            if cfg.attention == "full" or cfg.temporal_position == "input":
                tokens = tokens + temporal_pos[frames].to(tokens.dtype)[:, None]

        c = self.t_embedder(self._frame_timesteps(timestep, b, t, cond_mask))  # [B, D] or [B, T', D] (all frames)
        if self.y_embedder is not None:
            y = self.y_embedder(labels)
            c = c + (y if c.dim() == 2 else y[:, None])
        if text is not None:
            text = self.caption_projection(text.to(tokens.dtype))
            if text_mask is not None:
                text_mask = text_mask.to(torch.bool)
            if self.text_pool is not None:  # the caption's masked mean into the adaLN condition (0 for no caption)
                keep = (torch.ones(text.shape[:2], dtype=torch.bool, device=text.device) if text_mask is None
                        else text_mask)[..., None].to(text.dtype)
                pooled = self.text_pool((text * keep).sum(1) / keep.sum(1).clamp_min(1.0)) * keep.amax(1)
                c = c + (pooled if c.dim() == 2 else pooled[:, None]).to(c.dtype)
        block_c = self.t_block(c) if hasattr(self, "t_block") else c

        def in_frames(m):  # per-frame modulation of this rank's frames
            return m if m.dim() == 2 else m[:, frames]

        first_temporal = True
        for blk in self.blocks:
            temporal = blk.kind == "temporal"
            if temporal and first_temporal and temporal_pos is not None and cfg.temporal_position == "first_temporal":
                tokens = tokens + temporal_pos[frames].to(tokens.dtype)[:, None]  # Latte: once, before the 1st
            first_temporal = first_temporal and not temporal
            if sp is not None and temporal:  # DSP: all frames of this rank's positions
                tokens = sp.to_positions(tokens)
            r = None if rope is None else tuple((tab[:, positions] if temporal else tab[frames]).contiguous()
                                                 for tab in rope)
            tokens = self._block(blk, tokens, block_c if temporal else in_frames(block_c), r, text, text_mask, sp)
            if sp is not None and temporal:
                tokens = sp.to_frames(tokens)

        cf = in_frames(c)
        if hasattr(self, "final_adaLN"):
            shift, scale = self.final_adaLN(cf).chunk(2, dim=-1)
        else:
            shift, scale = (self.final_scale_shift_table + cf.unsqueeze(-2)).unbind(-2)
        if cfg.recompute == "none":
            tokens = self.final_linear(adaln_modulate(tokens, shift, scale, eps=cfg.norm_eps))
        else:  # saves the last block's output only, not its adaLN
            tokens = adaln_linear(tokens, shift, scale, self.final_linear.weight, self.final_linear.bias,
                                  eps=cfg.norm_eps)
        out = unpatchify(tokens, cfg.out_dim, (tokens.shape[1], grid[1], grid[2]), (pt, ph, pw))
        return out if sp is None else sp.gather_frames(out, dim=2)

    def _block(self, blk: VideoDiTBlock, tokens, c, rope, text, text_mask, sp) -> torch.Tensor:
        ckpt = self.config.gradient_checkpointing or self.config.recompute == "block"
        if not (ckpt and self.training and torch.is_grad_enabled()):
            return blk(tokens, c, rope, text, text_mask, sp)
        return _checkpointed(blk, tokens, c, rope, text, text_mask, sp)

    # ----------------------------------------------------------------------------- weights
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(d / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides) -> VideoDiT:
        """Load a directory written by :meth:`save_pretrained` (or ``dit-video export``).

        Checks before allocating anything: config.json parses and every value has its type and range,
        and the weights file's header lists exactly the tensors, with the shapes, that this config
        builds (read on the meta device). A damaged file is a one-line ``ValueError``.
        """
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        d = Path(directory)
        for f in ("config.json", "model.safetensors"):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d / f} not found: from_pretrained needs a directory written by "
                                        "VideoDiT.save_pretrained or `dit-video export`")
        try:
            cfg = json.loads((d / "config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{d / 'config.json'} is not readable JSON ({type(e).__name__}: {e})") from e
        if not isinstance(cfg, dict):
            raise ValueError(f"{d / 'config.json'} must hold a JSON object of VideoDiTConfig fields")
        cfg.update(overrides)
        try:
            config = VideoDiTConfig.from_dict(cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{d / 'config.json'}: {e}") from e
        weights = d / "model.safetensors"
        try:
            with safe_open(str(weights), framework="pt") as f:
                have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights} is damaged or truncated ({type(e).__name__}: {e})") from e
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        missing = sorted(set(want) - set(have))
        unexpected = sorted(set(have) - set(want))
        shapes = sorted(f"{k}: {have[k]} != {want[k]}" for k in set(want) & set(have) if have[k] != want[k])
        if missing or unexpected or shapes:
            raise ValueError(f"{weights} does not match {d / 'config.json'}: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}, shapes {shapes[:5]}")
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights} is damaged or truncated ({type(e).__name__}: {e})") from e
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model
