"""Weight interop: diffusers' LatteTransformer3DModel and the original Latte layout -> VideoDiT.

Both comparisons use random values for *every* parameter (Latte and our model zero-init parts, which
would make a comparison at init prove little) and require fp32 agreement within 1e-4 x the output std.
The original-Latte reference below is written from the published architecture (DiT blocks with
adaLN-Zero, factorized spatial/temporal attention, [cos | sin] timestep features, fixed 2D/1D sincos
tables, the temporal table added once before the first temporal block); it shares no code with ours.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dit_video.models.convert import (
    config_from_diffusers_latte,
    diffusers_latte_state_dict_to_videodit,
    diffusers_latte_text_mask,
    from_diffusers_latte,
    from_latte_checkpoint,
)

diffusers = pytest.importorskip("diffusers")


def _check_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    assert torch.isfinite(ref).all()
    std = ref.std().item()
    assert std > 1e-2, f"degenerate reference output (std {std})"
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4 * std, f"max abs diff {err:.3g} > 1e-4 x std {std:.3g}"
    return err


# ============================================================================ diffusers Latte
def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Normal values for every parameter, scaled by fan-in so that activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "scale_shift_table" not in name:
                std = (p[0].numel()) ** -0.5
            else:  # biases, modulation tables
                std = 0.3
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _diffusers_latte(**kw) -> torch.nn.Module:
    """A tiny diffusers Latte in the Latte-1 layout (adaLN-single, text cross-attention)."""
    heads, head_dim = kw.pop("heads", 2), kw.pop("head_dim", 8)
    args = dict(num_layers=2, num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=8,
                sample_size=8, patch_size=2, caption_channels=12, cross_attention_dim=heads * head_dim,
                activation_fn="gelu-approximate", attention_bias=True, norm_elementwise_affine=False, norm_eps=1e-6,
                norm_type="ada_norm_single", video_length=4)
    args.update(kw)
    return diffusers.LatteTransformer3DModel(**args).eval()


def _latte_inputs(model, hw: tuple[int, int] | None = None, frames: int | None = None, b: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    h, w = hw or (cfg.sample_size, cfg.sample_size)
    f = frames or cfg.video_length
    x = torch.randn(b, cfg.in_channels, f, h, w, generator=g)
    t = torch.rand(b, generator=g) * 1000
    text = torch.randn(b, 5, cfg.caption_channels, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)[:b]
    return x, t, text, mask


CASES = {
    # Latte-1 layout, learned sigma (out = 2 x in), inputs at the trained size
    "latte1": dict(),
    # a larger input than trained: diffusers recomputes the 2D table with base_size (interpolation)
    "interp_resolution": dict(hw=(12, 16)),
    # sample_size 128 -> interpolation_scale 2; no attention biases (-> zeros); out = in
    "interp_scale_nobias": dict(model=dict(sample_size=128, patch_size=16, head_dim=16, out_channels=None,
                                           attention_bias=False, video_length=3)),
    # LayerNorms with elementwise affine at their identity init convert exactly
    "affine_identity": dict(model=dict(norm_elementwise_affine=True), keep_norms=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_diffusers_latte_matches(case):
    spec = CASES[case]
    ref_model = _diffusers_latte(**spec.get("model", {}))
    _randomize(ref_model)
    if spec.get("keep_norms"):  # put the LayerNorm affines back to the identity (the convertible case)
        with torch.no_grad():
            for name, p in ref_model.named_parameters():
                if ".norm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
    x, t, text, mask = _latte_inputs(ref_model, spec.get("hw"))
    with torch.no_grad():
        ref = ref_model(x, t, text, encoder_attention_mask=diffusers_latte_text_mask(mask, x.shape[2])).sample
        ours_model = from_diffusers_latte(ref_model, kernel_backend="torch")
        ours = ours_model(x, t, text=text, text_mask=mask)
        err = _check_close(ours, ref)
        # the mask matters (so the comparison above exercised it) and "auto" dispatch agrees too
        unmasked = ours_model(x, t, text=text)
        assert (unmasked - ours).abs().max() > 100 * max(err, 1e-6)
        _check_close(ours_model.set_backend("auto")(x, t, text=text, text_mask=mask), ref)


def test_config_from_diffusers_latte():
    m = _diffusers_latte(num_layers=3, sample_size=128, patch_size=4, video_length=6)
    cfg = config_from_diffusers_latte(m)
    assert cfg == config_from_diffusers_latte(dict(m.config))  # model, FrozenDict or dict
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads) == (6, 16, 2)
    assert (cfg.in_channels, cfg.out_dim, cfg.learn_sigma) == (4, 8, True)
    assert cfg.patch_size == [1, 4, 4] and cfg.sample_size == [128, 128] and cfg.num_frames == 6
    assert (cfg.pos_base_size, cfg.pos_interpolation_scale) == (32, 2.0)
    assert (cfg.modulation, cfg.conditioning, cfg.caption_channels) == ("adaln_single", "text", 12)
    assert config_from_diffusers_latte(m, gradient_checkpointing=True).gradient_checkpointing


@pytest.mark.parametrize("bad, match", [
    (dict(activation_fn="geglu"), "activation_fn='geglu'"),
    (dict(cross_attention_dim=None), "cross_attention_dim=None"),
])
def test_unsupported_diffusers_config(bad, match):
    with pytest.raises(ValueError, match=match):
        from_diffusers_latte(_diffusers_latte(**bad))


def test_unsupported_norm_type():
    with pytest.raises(ValueError, match="norm_type='layer_norm'"):
        config_from_diffusers_latte(dict(_diffusers_latte().config, norm_type="layer_norm"))


def test_trained_affine_norm_is_refused():
    m = _randomize(_diffusers_latte(norm_elementwise_affine=True))
    with pytest.raises(ValueError, match=r"\.norm\d\.(weight|bias) is not the identity"):
        from_diffusers_latte(m)


def test_diffusers_state_dict_keys_are_checked():
    m = _diffusers_latte()
    cfg = config_from_diffusers_latte(m)
    sd = dict(m.state_dict())
    del sd["temporal_transformer_blocks.1.attn1.to_k.weight"]
    sd["transformer_blocks.0.attn3.to_q.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        diffusers_latte_state_dict_to_videodit(sd, cfg)
    assert "temporal_transformer_blocks.1.attn1.to_k.weight" in str(e.value)
    assert "transformer_blocks.0.attn3.to_q.weight" in str(e.value)


# ============================================================================ original Latte
def _ref_sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[sin | cos] of pos * 10000^(-2i/dim) (the Transformer / MAE table)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2))
    angles = pos.reshape(-1, 1).astype(np.float64) * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def _ref_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """MAE 2D table for a square grid, token n = row * grid + col: [table(col) | table(row)]."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    table = np.concatenate([_ref_sincos_1d(dim // 2, cols), _ref_sincos_1d(dim // 2, rows)], axis=1)
    return torch.from_numpy(table).float()[None]


def _latte_state_dict(d: int, depth: int, in_ch: int, p: int, out_ch: int, grid: int, frames: int,
                      num_classes: int | None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the original Latte layout (shapes from the published model)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int) -> torch.Tensor:
        std = shape[-1] ** -0.5 if len(shape) > 1 else 0.3  # weights by fan-in; biases 0.3
        return torch.randn(shape, generator=g) * std

    sd = {"x_embedder.proj.weight": torch.randn(d, in_ch, p, p, generator=g) * (in_ch * p * p) ** -0.5,
          "x_embedder.proj.bias": w(d),
          "t_embedder.mlp.0.weight": w(d, 256), "t_embedder.mlp.0.bias": w(d),
          "t_embedder.mlp.2.weight": w(d, d), "t_embedder.mlp.2.bias": w(d),
          "final_layer.linear.weight": w(p * p * out_ch, d), "final_layer.linear.bias": w(p * p * out_ch),
          "final_layer.adaLN_modulation.1.weight": w(2 * d, d), "final_layer.adaLN_modulation.1.bias": w(2 * d),
          "pos_embed": _ref_pos_embed(d, grid),
          "temp_embed": torch.from_numpy(_ref_sincos_1d(d, np.arange(frames))).float()[None]}
    if num_classes is not None:
        sd["y_embedder.embedding_table.weight"] = torch.randn(num_classes + 1, d, generator=g)  # + null class
    for i in range(depth):
        sd.update({f"blocks.{i}.attn.qkv.weight": w(3 * d, d), f"blocks.{i}.attn.qkv.bias": w(3 * d),
                   f"blocks.{i}.attn.proj.weight": w(d, d), f"blocks.{i}.attn.proj.bias": w(d),
                   f"blocks.{i}.mlp.fc1.weight": w(4 * d, d), f"blocks.{i}.mlp.fc1.bias": w(4 * d),
                   f"blocks.{i}.mlp.fc2.weight": w(d, 4 * d), f"blocks.{i}.mlp.fc2.bias": w(d),
                   f"blocks.{i}.adaLN_modulation.1.weight": w(6 * d, d),
                   f"blocks.{i}.adaLN_modulation.1.bias": w(6 * d)})
    return sd


def _ref_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _ref_dit_block(sd: dict, i: int, x: torch.Tensor, c: torch.Tensor, heads: int) -> torch.Tensor:
    """DiT block with adaLN-Zero on sequences x [N, L, D] with conditioning c [N, D]."""
    n, length, d = x.shape
    pre = f"blocks.{i}."
    mod = F.linear(F.silu(c), sd[pre + "adaLN_modulation.1.weight"], sd[pre + "adaLN_modulation.1.bias"])
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
    h = _ref_modulate(x, shift_msa, scale_msa)
    qkv = F.linear(h, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"])
    q, k, v = qkv.reshape(n, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # [N, heads, L, Dh] each
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    o = (attn @ v).transpose(1, 2).reshape(n, length, d)
    x = x + gate_msa[:, None] * F.linear(o, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
    h = _ref_modulate(x, shift_mlp, scale_mlp)
    h = F.linear(F.gelu(F.linear(h, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]), approximate="tanh"),
                 sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
    return x + gate_mlp[:, None] * h


def _ref_latte_forward(sd: dict, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, depth: int,
                       heads: int, p: int, out_ch: int) -> torch.Tensor:
    """The original Latte forward: x [B, F, C, H, W] -> [B, F, C_out, H, W]."""
    b, f, c, hh, ww = x.shape
    gh, gw = hh // p, ww // p
    s = gh * gw
    tok = F.conv2d(x.reshape(b * f, c, hh, ww), sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=p)
    tok = tok.flatten(2).transpose(1, 2) + sd["pos_embed"]  # [(b f), S, D]
    d = tok.shape[-1]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    t_freq = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)
    cond = F.linear(F.silu(F.linear(t_freq, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    if y is not None:
        cond = cond + sd["y_embedder.embedding_table.weight"][y]
    c_spatial, c_temporal = cond.repeat_interleave(f, 0), cond.repeat_interleave(s, 0)
    for i in range(0, depth, 2):
        tok = _ref_dit_block(sd, i, tok, c_spatial, heads)
        tok = tok.reshape(b, f, s, d).transpose(1, 2).reshape(b * s, f, d)  # (b f) s d -> (b s) f d
        if i == 0:
            tok = tok + sd["temp_embed"]
        tok = _ref_dit_block(sd, i + 1, tok, c_temporal, heads)
        tok = tok.reshape(b, s, f, d).transpose(1, 2).reshape(b * f, s, d)
    shift, scale = F.linear(F.silu(c_spatial), sd["final_layer.adaLN_modulation.1.weight"],
                            sd["final_layer.adaLN_modulation.1.bias"]).chunk(2, dim=-1)
    out = F.linear(_ref_modulate(tok, shift, scale), sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    out = out.reshape(b * f, gh, gw, p, p, out_ch).permute(0, 5, 1, 3, 2, 4)  # n h w p q c -> n c h p w q
    return out.reshape(b, f, out_ch, hh, ww)


LATTE = dict(d=32, depth=4, heads=2, in_ch=4, p=2, grid=4, frames=4)


@pytest.mark.parametrize("num_classes", [5, None], ids=["class", "uncond"])
def test_from_latte_checkpoint_matches(num_classes):
    a = LATTE
    out_ch = 2 * a["in_ch"]  # learned sigma, as Latte's released checkpoints
    sd = _latte_state_dict(a["d"], a["depth"], a["in_ch"], a["p"], out_ch, a["grid"], a["frames"], num_classes)
    g = torch.Generator().manual_seed(2)
    b = 3
    x = torch.randn(b, a["frames"], a["in_ch"], a["grid"] * a["p"], a["grid"] * a["p"], generator=g)  # Latte layout
    t = torch.tensor([0.0, 17.0, 999.0])
    y = torch.tensor([0, 4, 5]) if num_classes else None  # 5 = the null class
    kw = dict(hidden_size=a["d"], depth=a["depth"], num_heads=a["heads"], in_channels=a["in_ch"],
              kernel_backend="torch")
    kw.update(dict(num_classes=num_classes) if num_classes else dict(conditioning="none", num_classes=0))
    ours_model = from_latte_checkpoint(sd, "S/2", **kw)
    assert ours_model.config.sample_size == [a["grid"] * a["p"]] * 2 and ours_model.config.num_frames == a["frames"]
    with torch.no_grad():
        ref = _ref_latte_forward(sd, x, t, y, a["depth"], a["heads"], a["p"], out_ch)
        ours = ours_model(x.permute(0, 2, 1, 3, 4), t, labels=y).permute(0, 2, 1, 3, 4)
        _check_close(ours, ref)
        # a training checkpoint ({"ema": ..., "model": ...}) loads its EMA weights
        wrapped = from_latte_checkpoint({"ema": sd, "model": {}, "opt": {}}, "S/2", **kw)
        assert torch.equal(wrapped(x.permute(0, 2, 1, 3, 4), t, labels=y).permute(0, 2, 1, 3, 4), ours)


def _small_latte_sd():
    a = LATTE
    return _latte_state_dict(a["d"], a["depth"], a["in_ch"], a["p"], 8, a["grid"], a["frames"], 5)


SMALL = dict(hidden_size=32, depth=4, num_heads=2, num_classes=5)


def test_latte_checkpoint_missing_and_unexpected_keys():
    sd = _small_latte_sd()
    del sd["blocks.3.attn.qkv.bias"]
    del sd["final_layer.linear.weight"]
    sd["blocks.4.attn.qkv.weight"] = torch.zeros(96, 32)
    sd["text_embedding_projection.weight"] = torch.zeros(32, 4)
    with pytest.raises(ValueError) as e:
        from_latte_checkpoint(sd, "S/2", **SMALL)
    msg = str(e.value)
    for key in ("blocks.3.attn.qkv.bias", "final_layer.linear.weight", "blocks.4.attn.qkv.weight",
                "text_embedding_projection.weight"):
        assert key in msg
    assert "missing keys" in msg and "unexpected keys" in msg


def test_latte_checkpoint_shape_and_table_errors():
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.qkv\.weight: \(96, 32\), expected \(144, 48\)"):
        from_latte_checkpoint(_small_latte_sd(), "S/2", **dict(SMALL, hidden_size=48))
    with pytest.raises(ValueError, match="unconditional checkpoint"):
        sd = _small_latte_sd()
        del sd["y_embedder.embedding_table.weight"]
        from_latte_checkpoint(sd, "S/2", **SMALL)
    sd = _small_latte_sd()
    sd["pos_embed"] = sd["pos_embed"] + 0.01  # not the fixed sincos table
    with pytest.raises(ValueError, match="pos_embed differs"):
        from_latte_checkpoint(sd, "S/2", **SMALL)
    with pytest.raises(ValueError, match="modulation='adaln_single'"):
        from_latte_checkpoint(_small_latte_sd(), "S/2", **dict(SMALL, modulation="adaln_single"))
