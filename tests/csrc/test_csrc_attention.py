"""dit_video::csrc_temporal_attention (CPU) against the torch reference: outputs and gradients, fp32 and
bf16, the 2x rule, odd sizes, the real temporal views of a fused QKV projection, masks with fully
masked rows, opcheck, and the dispatch rules."""

import contextlib

import pytest
import torch
from csrc_numerics import assert_2x, run_with_grads

from dit_video.kernels import attention, resolve
from dit_video.kernels.layout import empty_in_layout_of
from dit_video.kernels.reference import attention_ref

DTYPES = [torch.float32, torch.bfloat16]


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty (also at::empty in the extension) returns NaN-filled memory: unwritten outputs fail."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def temporal(qkv):
    q, k, v = qkv.unbind(3)  # [B, T, S, H, D] views
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, S, T, H, D]


def check_against_reference(make_views, base, mask, dtype, csrc, scale=None):
    def ours(b):
        q, k, v = make_views(b)
        return csrc.attention(q, k, v, key_padding_mask=mask, scale=scale)

    def ref(b):
        q, k, v = make_views(b)
        return attention_ref(q, k, v, key_padding_mask=mask, scale=scale)

    q0 = make_views(base)[0]
    g = torch.randn(q0.shape, dtype=torch.float64)
    with poisoned_empty():
        (o,), (gb,) = run_with_grads(ours, [base.to(dtype)], [g])
    (o_t,), (gb_t,) = run_with_grads(ref, [base.to(dtype)], [g])
    (o64,), (gb64,) = run_with_grads(ref, [base.double()], [g])
    assert o.dtype == dtype and o.shape == q0.shape
    assert o.stride() == empty_in_layout_of(make_views(base.to(dtype))[0]).stride()
    assert_2x("o", o, o_t, o64, dtype)
    assert_2x("grad", gb, gb_t, gb64, dtype)
    return o, gb


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 5, 3, 64), (1, 17, 3, 2, 40), (2, 1, 4, 1, 8), (1, 7, 2, 2, 80),
                                   (1, 33, 2, 1, 17)])
def test_temporal_view_of_fused_qkv(csrc, dtype, shape):
    b, t, s, h, d = shape
    qkv = torch.randn(b, t, s, 3, h, d)
    check_against_reference(temporal, qkv, None, dtype, csrc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_key_padding_mask_with_fully_masked_rows(csrc, dtype):
    b, t, s, h, d = 2, 13, 4, 2, 24
    qkv = torch.randn(b, t, s, 3, h, d)
    mask = torch.rand(b, s, t) > 0.35
    mask[0, 1] = False  # a fully masked sequence: o = 0, no gradient
    mask[1, 2, :] = False
    mask[1, 2, 5] = True  # a single key
    o, g = check_against_reference(temporal, qkv, mask, dtype, csrc)
    assert (o[0, 1] == 0).all()
    q_grad = g.unbind(3)[0].transpose(1, 2)
    assert (q_grad[0, 1] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_broadcast_and_custom_scale(csrc, dtype):
    b, t, s, h, d = 2, 9, 3, 2, 16
    qkv = torch.randn(b, t, s, 3, h, d)
    mask = torch.rand(b, 1, t) > 0.3  # per sample, broadcast over S
    check_against_reference(temporal, qkv, mask, dtype, csrc, scale=0.3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [(), (5,), (2, 3), (2, 1, 3)])
def test_contiguous_any_batch_dims(csrc, dtype, batch):
    L, h, d = 11, 2, 32
    base = torch.randn((3,) + batch + (L, h, d))
    check_against_reference(lambda x: x.unbind(0), base, None, dtype, csrc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_attention_broadcast_text_keys(csrc, dtype):
    # queries of every frame [B, T, S, H, D] attend to one text sequence [B, 1, L, H, D] with a mask
    b, t, s, L, h, d = 2, 3, 7, 9, 2, 16
    q, kv = torch.randn(b, t, s, h, d), torch.randn(b, 1, L, 2, h, d)
    mask = torch.rand(b, 1, L) > 0.3
    mask[1] = False  # no text at all: o = 0, no gradient
    base = torch.cat([q.flatten(), kv.flatten()])

    def views(x):
        k, v = x[q.numel():].view_as(kv).unbind(3)
        return x[: q.numel()].view_as(q), k, v

    o, _ = check_against_reference(views, base, mask, dtype, csrc)
    assert (o[1] == 0).all()


def test_spatial_view_and_lq_ne_lk(csrc):
    # [B, T, S, H, D] spatial view (batch B, T; sequence S), and a different key length
    q = torch.randn(2, 3, 19, 2, 16)
    kv = torch.randn(2, 2, 3, 7, 2, 16)
    base = torch.cat([q.flatten(), kv.flatten()])

    def views(x):
        qq = x[: q.numel()].view_as(q)
        k, v = x[q.numel():].view_as(kv).unbind(0)
        return qq, k, v

    check_against_reference(views, base, None, torch.float32, csrc)


def test_opcheck(csrc):
    qkv = torch.randn(2, 5, 3, 3, 2, 8)
    q, k, v = temporal(qkv.clone().requires_grad_())
    mask = torch.rand(2, 3, 5) > 0.3
    torch.library.opcheck(torch.ops.dit_video.csrc_temporal_attention.default, (q, k, v, mask, 0.35))
    torch.library.opcheck(torch.ops.dit_video.csrc_temporal_attention.default, (q, k, v, None, 0.35))
    kb, vb = k[:, :1].detach().clone().requires_grad_(), v[:, :1].detach().clone().requires_grad_()
    torch.library.opcheck(torch.ops.dit_video.csrc_temporal_attention.default, (q, kb, vb, mask[:, :1], 0.35))
    o, lse = torch.ops.dit_video.csrc_temporal_attention(q.detach(), k.detach(), v.detach(), mask, 0.35)
    torch.library.opcheck(torch.ops.dit_video.csrc_temporal_attention_backward.default,
                          (torch.randn_like(o), q.detach(), k.detach(), v.detach(), o, lse, mask, 0.35))


def test_dispatch_auto_picks_cpu_for_the_temporal_view(csrc):
    q, k, v = temporal(torch.randn(1, 16, 4, 3, 2, 16))
    assert resolve("attention", "auto", q, k, v).backend == "cpu"
    torch.testing.assert_close(attention(q, k, v, backend="cpu"), attention(q, k, v, backend="torch"))
    check = resolve("attention", "cpu", q, k, v).check
    long = torch.randn(1, 2, csrc.CPU_MAX_LK + 1, 2, 16)
    assert "Lk" in check(long, long, long)
    assert resolve("attention", "auto", long, long, long).backend == "torch"
    assert "dtype" in check(q.half(), k.half(), v.half())
    assert "broadcast" in check(q[:, :1], k, v)  # q broadcast: no
    assert "broadcast" in check(q, k, v[..., :8])
    kt = torch.randn(1, 1, 16, 2, 16)  # a text key broadcast over S: served
    assert resolve("attention", "auto", q, kt, kt).backend == "cpu"


def test_no_copies_of_q_k_v_o_in_a_temporal_block(csrc):
    from torch.utils._python_dispatch import TorchDispatchMode

    from dit_video import VideoDiT, VideoDiTConfig

    cfg = VideoDiTConfig.from_preset("tiny", depth=2, hidden_size=32, num_heads=2, sample_size=[8, 8])
    model = VideoDiT(cfg).set_backend("cpu")
    blk = next(b for b in model.blocks if b.kind == "temporal")
    b_, t, s, d = 2, cfg.num_frames, 4, cfg.hidden_size
    x = torch.randn(b_, t, s, d)
    qkv_numel = b_ * t * s * d  # one of q, k, v or o

    copies = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten.clone, torch.ops.aten._to_copy):
                sizes = [a.numel() for a in args if isinstance(a, torch.Tensor)]
                if qkv_numel in sizes:
                    copies.append(str(func))
            return out

    c = torch.randn(b_, 6 * d if blk.single else d)
    with Count():
        blk(x, c)  # the whole block: adaLN, attention on the temporal views, gated residual, MLP
    assert copies == []
    blk.attn.backend = "torch"  # the reference reshapes the strided views: the counter does see copies
    with Count():
        blk(x, c)
    assert copies


def test_coexists_with_the_triton_backend(csrc):
    """Both backends register ops in the dit_video namespace; loading both must not collide."""
    import importlib

    try:
        importlib.import_module("dit_video.kernels.triton_adaln")
    except ImportError as e:
        pytest.skip(f"triton backend not importable: {e}")
    assert hasattr(torch.ops.dit_video, "gated_residual_adaln")
    assert hasattr(torch.ops.dit_video, "csrc_gated_residual_adaln")
