"""dit_video::csrc_temporal_attention (CPU): opcheck, the dispatch rules, no copies in a temporal block. Its
numerics (outputs and gradients, odd sizes, fused-QKV views, masks) are in tests/kernels/test_contract.py."""

import pytest
import torch
from auto_rule import auto_choice

from dit_video.kernels import attention, resolve, use_backend


def temporal(qkv):
    q, k, v = qkv.unbind(3)  # [B, T, S, H, D] views
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, S, T, H, D]


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


def test_dispatch_auto_times_cpu_for_the_temporal_view(csrc):
    q, k, v = temporal(torch.randn(1, 16, 4, 3, 2, 16))
    auto_choice("attention", q, k, v)  # cpu timed, the choice by the rule (auto_rule.py)
    torch.testing.assert_close(attention(q, k, v, backend="cpu"), attention(q, k, v, backend="torch"))
    check = resolve("attention", "cpu", q, k, v).check
    long = torch.randn(1, 2, csrc.CPU_MAX_LK + 1, 2, 16)
    assert "Lk" in check(long, long, long)
    assert resolve("attention", "auto", long, long, long).backend == "torch"
    assert "dtype" in check(q.half(), k.half(), v.half())
    assert "broadcast" in check(q[:, :1], k, v)  # q broadcast: no
    assert "broadcast" in check(q, k, v[..., :8])
    kt = torch.randn(1, 1, 16, 2, 16)  # a text key broadcast over S: served
    auto_choice("attention", q, kt, kt)


def test_no_copies_of_q_k_v_o_in_a_temporal_block(csrc):
    from torch.utils._python_dispatch import TorchDispatchMode

    from dit_video import VideoDiT, VideoDiTConfig

    cfg = VideoDiTConfig.from_preset("tiny", depth=2, hidden_size=32, num_heads=2, sample_size=[8, 8])
    model = VideoDiT(cfg)
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
    with use_backend("cpu"), Count():
        blk(x, c)  # the whole block: adaLN, attention on the temporal views, gated residual, MLP
    assert copies == []
    with use_backend("torch"), Count():  # the reference reshapes the strided views: the counter does see copies
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
