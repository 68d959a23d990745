"""A tiny VideoDiT on the Triton backend (interpreter) matches the torch backend, and its temporal
attention path moves no copy of q, k, v or o."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dit_video.config import VideoDiTConfig
from dit_video.kernels import triton_temporal_attention, use_backend
from dit_video.models import VideoDiT

try:
    from test_triton_common import poison_outputs  # noqa: F401 - autouse fixture
except ImportError:
    from .test_triton_common import poison_outputs  # noqa: F401

CASES = {
    # spatial S=4 and temporal T=4: both attentions take the packed kernel; sincos positions
    "tiny": dict(depth=2, hidden_size=32, num_heads=2, sample_size=[8, 8], num_frames=4),
    # spatial S=72 > 64: the flash kernel; 3D RoPE on the strided q/k views; per-frame timesteps
    "flash_rope": dict(depth=2, hidden_size=32, num_heads=2, sample_size=[36, 32], num_frames=2,
                       positions="rope3d"),
    # text cross-attention: k/v [B, 1, L, H, D] broadcast over frames, key-padding mask with a
    # caption that is entirely padding; adaLN-single modulation
    "text": dict(depth=2, hidden_size=32, num_heads=2, sample_size=[8, 8], num_frames=3, conditioning="text",
                 caption_channels=12, modulation="adaln_single"),
}


def _model(case: str) -> VideoDiT:
    cfg = VideoDiTConfig.from_preset("tiny", **CASES[case])
    torch.manual_seed(0)
    model = VideoDiT(cfg)
    with torch.no_grad():  # DiT init zeroes adaLN and the output layer: perturb so every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(model: VideoDiT, case: str) -> tuple[tuple, dict]:
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    b = 1 if case == "flash_rope" else 2
    x = torch.randn(b, cfg.in_channels, cfg.num_frames, *cfg.sample_size, generator=g)
    t = torch.rand(b, cfg.num_frames, generator=g) * 1000 if case == "flash_rope" else torch.rand(b, generator=g) * 1000
    kw = {}
    if cfg.conditioning == "text":
        kw["text"] = torch.randn(b, 5, cfg.caption_channels, generator=g)
        mask = torch.tensor([[True, True, False, True, False], [False] * 5])
        kw["text_mask"] = mask
    return (x, t), kw


@pytest.mark.parametrize("case", list(CASES))
def test_videodit_triton_matches_torch(case):
    model = _model(case)
    args, kw = _inputs(model, case)
    g = torch.Generator().manual_seed(2)
    results = {}
    for backend in ("torch", "triton"):
        model.set_backend(backend)
        model.zero_grad(set_to_none=True)
        out = model(*args, **kw)
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        (out * cot).sum().backward()
        results[backend] = (out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                                           if p.grad is not None})
    del g
    (o_ref, g_ref), (o_tri, g_tri) = results["torch"], results["triton"]
    assert o_ref.abs().max() > 1e-3  # the comparison is not between zeros
    torch.testing.assert_close(o_tri, o_ref, atol=2e-5, rtol=1e-4)
    assert g_ref.keys() == g_tri.keys() and len(g_ref) > 10
    for name in g_ref:
        torch.testing.assert_close(g_tri[name], g_ref[name], atol=5e-5, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


COPY_OPS = {"copy_", "clone", "_to_copy", "cat", "stack", "index_select", "gather", "_unsafe_index",
            "permute_copy", "transpose_copy", "view_copy", "expand_copy", "as_strided_copy"}


class CopyCounter(TorchDispatchMode):
    """Records every copying aten op and the numel of what it produced."""

    def __init__(self):
        super().__init__()
        self.copies: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in COPY_OPS:
            outs = out if isinstance(out, (tuple, list)) else [out]
            for o in outs:
                if isinstance(o, torch.Tensor):
                    self.copies.append((name, o.numel()))
        return out


def _temporal_block_inputs(model: VideoDiT):
    cfg = model.config
    blk = next(b for b in model.blocks if b.kind == "temporal")
    t, s = cfg.num_frames, (cfg.sample_size[0] // 4) * (cfg.sample_size[1] // 4)
    tokens = torch.randn(2, t, s, cfg.hidden_size)
    c = torch.randn(2, cfg.hidden_size)
    return blk, tokens, c


def test_temporal_block_moves_no_copy_of_qkvo():
    """With the triton backend, a temporal block's forward makes no copy of a q/k/v/o-sized tensor;
    with the torch reference (which reshapes the strided view) the same counter does see copies."""
    model = _model("tiny")
    blk, tokens, c = _temporal_block_inputs(model)
    qkvo_numel = tokens.numel()  # B*T*S*H*Dh: the size of each of q, k, v, o (and 3x for fused qkv)
    sizes = {qkvo_numel, 3 * qkvo_numel}
    seen = {}
    for backend in ("torch", "triton"):
        with use_backend(backend), torch.no_grad(), CopyCounter() as cc:  # a block alone: no model-level context
            blk(tokens, c)
        seen[backend] = [(n, k) for n, k in cc.copies if k in sizes]
    assert seen["torch"], "the counter should see the reference's reshape copies of the temporal view"
    assert seen["triton"] == [], f"copies in the triton temporal path: {seen['triton']}"


def test_temporal_launcher_moves_no_copy(monkeypatch):
    """Inside the packed kernel's launcher (custom ops hide their insides from a dispatch mode),
    forward and backward make no copy either: only the outputs are allocated."""
    b, t, s, h, d = 1, 4, 6, 2, 16
    qkv = torch.randn(b, t, s, 3, h, d)
    q, k, v = (x.transpose(1, 2) for x in qkv.unbind(3))
    launches = []

    class NoLaunch:  # the interpreter copies every argument to run a kernel: count the launcher alone
        def __getitem__(self, grid):
            return lambda *a, **kw: launches.append(grid)

    monkeypatch.setattr(triton_temporal_attention, "_packed_fwd", NoLaunch())
    monkeypatch.setattr(triton_temporal_attention, "_packed_bwd", NoLaunch())
    with CopyCounter() as cc:
        o, lse = triton_temporal_attention._launch_fwd(q, k, v, None, d ** -0.5)
        do = torch.randn(b, t, s, h, d).transpose(1, 2)
        triton_temporal_attention._launch_bwd(do, q, k, v, o, lse, None, d ** -0.5)
    assert len(launches) == 2
    assert [c for c in cc.copies if c[1] >= q.numel()] == []
    assert o.transpose(1, 2).is_contiguous()
