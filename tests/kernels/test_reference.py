"""The torch reference backend against plain fp64 math, and the dispatch rules."""

import math

import pytest
import torch

from dit_video.kernels import (
    BackendUnavailable,
    adaln_modulate,
    attention,
    available,
    gated_residual_adaln,
    resolve,
    rope3d,
    use_backend,
)
from dit_video.kernels.layout import empty_in_layout_of
from dit_video.models.embeddings import rope3d_tables


def naive_attention(q, k, v, mask=None, scale=None):
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("...qhd,...khd->...hqk", q, k) * scale
    if mask is not None:
        m = mask[..., None, None, :]
        s = s.masked_fill(~m, -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("...hqk,...khd->...qhd", p, v)


@pytest.mark.parametrize("shape", [(2, 3, 17, 2, 8), (1, 1, 1, 1, 4), (2, 5, 13, 3, 40)])
def test_attention_matches_naive(shape):
    q, k, v = (torch.randn(shape) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, backend="torch").double(), naive_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_attention_strided_views_of_fused_qkv():
    b, t, s, h, d = 2, 5, 7, 3, 8
    qkv = torch.randn(b, t, s, 3, h, d)
    q, k, v = qkv.unbind(3)
    temporal = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), backend="torch")
    ref = naive_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    torch.testing.assert_close(temporal.double(), ref, atol=1e-5, rtol=1e-5)


def test_attention_mask_broadcast_and_fully_masked_rows():
    b, t, s, L, h, d = 2, 3, 5, 6, 2, 8
    q = torch.randn(b, t, s, h, d, requires_grad=True)
    k = torch.randn(b, 1, L, h, d, requires_grad=True)
    v = torch.randn(b, 1, L, h, d, requires_grad=True)
    mask = torch.rand(b, L) > 0.4
    mask[1] = False  # sample 1 has no text at all: its queries must get 0, not NaN
    o = attention(q, k, v, key_padding_mask=mask[:, None], backend="torch")
    assert torch.isfinite(o).all()
    assert (o[1] == 0).all()
    torch.testing.assert_close(o.double(), naive_attention(q, k, v, mask[:, None]), atol=1e-5, rtol=1e-5)
    o.square().sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[1] == 0).all()
    assert (k.grad[1] == 0).all() and (v.grad[1] == 0).all()


def test_attention_bad_inputs():
    q = torch.randn(2, 5, 2, 8)
    with pytest.raises(ValueError, match="heads and head_dim"):
        attention(q, torch.randn(2, 5, 2, 4), torch.randn(2, 5, 2, 4))
    with pytest.raises(ValueError, match="bool"):
        attention(q, q, q, key_padding_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="Lk"):
        attention(q, q, q, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("mod_shape", ["sample", "frame"])
def test_adaln_and_gated_residual(mod_shape):
    b, t, s, d = 2, 3, 5, 16
    x, y = torch.randn(b, t, s, d), torch.randn(b, t, s, d)
    ms = (b, d) if mod_shape == "sample" else (b, t, d)
    gate, shift, scale = (torch.randn(ms) for _ in range(3))

    def bc(m):
        return m[:, None, None] if m.dim() == 2 else m[:, :, None]

    def ln(z):
        z = z.double()
        return (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-6)

    want = ln(x) * (1 + bc(scale).double()) + bc(shift).double()
    torch.testing.assert_close(adaln_modulate(x, shift, scale, backend="torch").double(), want, atol=1e-5, rtol=1e-5)
    r, h = gated_residual_adaln(x, y, gate, shift, scale, backend="torch")
    r_want = x.double() + bc(gate).double() * y.double()
    torch.testing.assert_close(r.double(), r_want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.double(), ln(r_want) * (1 + bc(scale).double()) + bc(shift).double(),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="shift"):
        adaln_modulate(x, torch.randn(b, d + 1), scale)


def test_rope3d_is_a_rotation_with_relative_positions():
    b, t, hh, ww, heads, d = 1, 4, 3, 5, 2, 24
    cos, sin = rope3d_tables((t, hh, ww), d)
    q = torch.randn(b, t, hh * ww, heads, d, dtype=torch.float64)
    rq = rope3d(q, cos, sin, backend="torch")
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))  # norm-preserving
    # the same vector at every position: scores depend on the offset between positions only
    vec = torch.randn(d, dtype=torch.float64)
    x = vec.expand(1, t, hh * ww, 1, d).contiguous()
    r = rope3d(x, cos, sin, backend="torch")[0, :, :, 0]  # [T, S, D]
    grid = r.reshape(t, hh, ww, d)
    a = (grid[0, 0, 0] * grid[1, 1, 2]).sum()
    bb = (grid[2, 1, 1] * grid[3, 2, 3]).sum()
    torch.testing.assert_close(a, bb)
    with pytest.raises(ValueError, match="tables"):
        rope3d(q, cos[:1], sin[:1])


def test_layout_helper_keeps_token_order():
    qkv = torch.randn(2, 4, 6, 3, 2, 8)
    q = qkv[:, :, :, 0].transpose(1, 2)  # temporal view [B, S, T, H, D]
    o = empty_in_layout_of(q)
    assert o.shape == q.shape
    assert o.transpose(1, 2).is_contiguous()


def test_dispatch_reports_every_reason():
    q = torch.randn(1, 4, 2, 8)
    assert resolve("attention", "auto", q, q, q).backend in ("cpu", "torch")
    with pytest.raises(BackendUnavailable, match="flash"):
        attention(q, q, q, backend="flash")
    with pytest.raises(ValueError, match="unknown backend"):
        attention(q, q, q, backend="nope")
    with use_backend("torch"):
        assert resolve("attention", "auto", q, q, q).backend == "torch"
    assert available("attention")["torch"] is None
