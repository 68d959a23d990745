"""VideoDiT: shapes, options, conditioning semantics, errors, save/load, presets, and no-copy views."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dit_video.models.videodit as videodit_mod
from dit_video import PRESETS, VideoDiT, VideoDiTConfig
from dit_video.kernels.layout import empty_in_layout_of
from dit_video.kernels.reference import attention_ref


def small(**kw) -> VideoDiTConfig:
    base = dict(in_channels=3, num_frames=4, sample_size=[8, 8], patch_size=[1, 2, 2], hidden_size=32, depth=2,
                num_heads=2, kernel_backend="torch")
    base.update(kw)
    return VideoDiTConfig(**base)


def randomize(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Zero-init makes the output 0 whatever the input: tests of semantics need live weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(cfg: VideoDiTConfig, b: int = 2, t: int = 4):
    x = torch.randn(b, cfg.in_channels, t, *cfg.sample_size)
    kw = {}
    if cfg.conditioning == "text":
        kw["text"] = torch.randn(b, 5, cfg.caption_channels)
        kw["text_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:b]
    if cfg.conditioning == "class":
        kw["labels"] = torch.randint(0, cfg.num_classes, (b,))
    return x, torch.rand(b) * 1000, kw


OPTIONS = [
    {},
    dict(attention="full"),
    dict(positions="rope3d"),
    dict(modulation="adaln_single"),
    dict(conditioning="text", caption_channels=12),
    dict(conditioning="text", caption_channels=12, modulation="adaln_single", positions="rope3d"),
    dict(conditioning="text", caption_channels=12, pooled_text=True),
    dict(conditioning="class", num_classes=5, learn_sigma=True),
    dict(qk_norm=True, patch_size=[2, 2, 2]),
    dict(gradient_checkpointing=True),
]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_forward_backward_shapes(opts):
    cfg = small(**opts)
    model = randomize(VideoDiT(cfg)).train()
    x, t, kw = inputs(cfg)
    out = model(x, t, **kw)
    assert out.shape == (2, cfg.out_dim, 4, 8, 8)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_zero_init_output_is_zero():
    for opts in OPTIONS:
        cfg = small(**opts)
        x, t, kw = inputs(cfg)
        assert VideoDiT(cfg)(x, t, **kw).abs().max() == 0


def test_gradient_checkpointing_matches():
    cfg = small(conditioning="text", caption_channels=12)
    a = randomize(VideoDiT(cfg)).train()
    b = randomize(VideoDiT(small(conditioning="text", caption_channels=12, gradient_checkpointing=True))).train()
    x, t, kw = inputs(cfg)
    oa, ob = a(x, t, **kw), b(x, t, **kw)
    torch.testing.assert_close(oa, ob)
    oa.sum().backward()
    ob.sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_cond_mask_forces_timestep_zero():
    cfg = small()
    model = randomize(VideoDiT(cfg)).eval()
    x, t, _ = inputs(cfg)
    cond = torch.zeros(2, 4, dtype=torch.bool)
    cond[:, :2] = True
    per_frame = t[:, None].expand(2, 4).clone()
    per_frame[:, :2] = 0
    torch.testing.assert_close(model(x, t, cond_mask=cond), model(x, per_frame))
    # and the mask matters: a different timestep on those frames changes the output
    assert not torch.allclose(model(x, t, cond_mask=cond), model(x, t))


def test_per_frame_timesteps_differ_from_per_clip():
    cfg = small()
    model = randomize(VideoDiT(cfg)).eval()
    x, t, _ = inputs(cfg)
    same = model(x, t[:, None].expand(2, 4))
    torch.testing.assert_close(same, model(x, t))
    tt = t[:, None].expand(2, 4).clone()
    tt[:, -1] = 0
    assert not torch.allclose(model(x, tt), same)


def test_temporal_blocks_mix_frames_and_spatial_do_not():
    """Change frame 0 only: a spatial-only model keeps other frames; the factorized one doesn't."""
    cfg = small(depth=2)
    model = randomize(VideoDiT(cfg)).eval()
    x, t, _ = inputs(cfg)
    x2 = x.clone()
    x2[:, :, 0] += 1
    out, out2 = model(x, t), model(x2, t)
    assert not torch.allclose(out[:, :, 1:], out2[:, :, 1:])  # temporal block carries it to other frames
    model.blocks[1].attn.proj.weight.data.zero_()  # silence the temporal attention
    model.blocks[1].attn.proj.bias.data.zero_()
    out, out2 = model(x, t), model(x2, t)
    torch.testing.assert_close(out[:, :, 1:], out2[:, :, 1:])


@pytest.mark.parametrize("pooled", [False, True])
def test_text_mask_and_null_text(pooled):
    cfg = small(conditioning="text", caption_channels=12, pooled_text=pooled)
    model = randomize(VideoDiT(cfg)).eval()
    x, t, kw = inputs(cfg)
    base = model(x, t, **kw)
    text2 = kw["text"].clone()
    text2[0, 3:] = 100.0  # masked-out tokens of sample 0 must not matter
    torch.testing.assert_close(model(x, t, text=text2, text_mask=kw["text_mask"]), base)
    # an all-masked caption is the null condition: the same as passing no text
    none_mask = torch.zeros_like(kw["text_mask"])
    torch.testing.assert_close(model(x, t, text=kw["text"], text_mask=none_mask), model(x, t))


def test_pooled_text_reaches_the_adaln_without_cross_attention():
    for pooled in (False, True):
        model = randomize(VideoDiT(small(conditioning="text", caption_channels=12, pooled_text=pooled))).eval()
        with torch.no_grad():
            for blk in model.blocks:
                if blk.cross is not None:  # the cross-attention passes nothing
                    blk.cross.proj.weight.zero_()
                    blk.cross.proj.bias.zero_()
        x, t, kw = inputs(small(conditioning="text", caption_channels=12))
        other = model(x, t, text=torch.randn_like(kw["text"]), text_mask=kw["text_mask"])
        assert torch.allclose(model(x, t, **kw), other) is not pooled  # only the pooled path carries the caption
    with pytest.raises(ValueError, match="pooled_text needs conditioning='text'"):
        small(pooled_text=True)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(1, 4, 4, 8, 8), torch.rand(1)), "channels"),
        (lambda m: m(torch.randn(1, 3, 4, 7, 8), torch.rand(1)), "divisible"),
        (lambda m: m(torch.randn(1, 3, 4, 8, 8), torch.rand(3)), "timestep"),
        (lambda m: m(torch.randn(1, 3, 4, 8, 8), torch.rand(1), text=torch.randn(1, 5, 12)), "no text"),
        (lambda m: m(torch.randn(1, 3, 4, 8), torch.rand(1)), "B, C, T, H, W"),
        (lambda m: m(torch.randn(1, 3, 4, 8, 8), torch.rand(1), cond_mask=torch.ones(1, 4)), "cond_mask"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(VideoDiT(small()))


def test_bad_text_and_labels():
    m = VideoDiT(small(conditioning="text", caption_channels=12))
    with pytest.raises(ValueError, match="caption_channels"):
        m(torch.randn(1, 3, 4, 8, 8), torch.rand(1), text=torch.randn(1, 5, 7))
    m = VideoDiT(small(conditioning="class", num_classes=3))
    with pytest.raises(ValueError, match="labels"):
        m(torch.randn(1, 3, 4, 8, 8), torch.rand(1))


def test_bad_config():
    with pytest.raises(ValueError, match="attention"):
        small(attention="axial")
    with pytest.raises(ValueError, match="unknown preset"):
        VideoDiTConfig.from_preset("XXL/2")
    with pytest.raises(ValueError, match="unknown VideoDiTConfig keys"):
        VideoDiTConfig.from_preset("tiny", hiddn_size=3)
    with pytest.raises(ValueError, match="divisible"):
        small(hidden_size=30, num_heads=4)


def test_save_and_load_pretrained(tmp_path):
    cfg = small(conditioning="text", caption_channels=12, positions="rope3d")
    model = randomize(VideoDiT(cfg)).eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = VideoDiT.from_pretrained(tmp_path / "m", kernel_backend="torch").eval()
    x, t, kw = inputs(cfg)
    torch.testing.assert_close(loaded(x, t, **kw), model(x, t, **kw), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoDiT.from_pretrained(tmp_path / "nothing")


def test_preset_parameter_counts():
    counts = {}
    for name in PRESETS:
        with torch.device("meta"):
            counts[name] = VideoDiT(VideoDiTConfig.from_preset(name)).num_parameters()
    # Latte's class-conditional XL/2 (101 classes, learned sigma, adaLN-Zero): 673.8M parameters
    assert round(counts["XL/2"] / 1e6, 1) == 673.8
    assert counts["tiny"] < counts["S/2"] < counts["B/2"] < counts["L/2"] < counts["XL/2"]


# ------------------------------------------------------------------------------------------------ no copies
COPY_OPS = {"copy_", "clone", "_to_copy", "contiguous", "as_strided_copy", "_unsafe_view", "permute_copy",
            "transpose_copy", "view_copy", "_reshape_copy"}


class CopyCounter(TorchDispatchMode):
    """Counts copy-like aten ops whose output is as large as q/k/v/o."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel = numel
        self.hits: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not self.paused and name in COPY_OPS and isinstance(out, torch.Tensor) and out.numel() >= self.numel:
            self.hits.append(name)
        return out


@pytest.mark.parametrize("kind", ["temporal", "spatial"])
def test_block_passes_views_of_fused_qkv_and_copies_nothing(monkeypatch, kind):
    """The model hands attention strided views of one QKV projection and adds no copy of its own.

    Attention is replaced by a probe that records what it receives and returns o in q's layout
    (as the fused kernels do); the probe's own arithmetic is excluded from the count. With the
    strided kernels (tests/kernels, tests/csrc) the whole temporal path is copy-free.
    """
    cfg = small(hidden_size=32, num_heads=2)
    model = randomize(VideoDiT(cfg)).eval()
    block = model.blocks[0 if kind == "spatial" else 1]
    assert block.kind == kind
    b, t, s, d = 2, 4, 16, 32
    x = torch.randn(b, t, s, d)
    c = torch.randn(b, d)
    seen = []
    counter = CopyCounter(numel=b * t * s * d)

    def probe(q, k, v, *, key_padding_mask=None, scale=None, backend="auto"):
        seen.append((q, k, v))
        counter.paused = True
        o = empty_in_layout_of(q)
        o.copy_(attention_ref(q, k, v, key_padding_mask, scale))
        counter.paused = False
        return o

    monkeypatch.setattr(videodit_mod, "attention", probe)
    with torch.no_grad(), counter:
        out = block(x, c)
    assert out.shape == x.shape
    assert counter.hits == [], f"copies of q/k/v/o-sized tensors in the {kind} block: {counter.hits}"
    q, k, v = seen[0]
    base = q.untyped_storage().data_ptr()
    assert k.untyped_storage().data_ptr() == base and v.untyped_storage().data_ptr() == base  # one fused QKV
    want = (b, s, t) if kind == "temporal" else (b, t, s)
    assert q.shape[:3] == want and not q.is_contiguous()
    # the probe's result equals the reference block
    monkeypatch.undo()
    torch.testing.assert_close(out, block(x, c))


def test_recompute_modes_match_none_and_hold_less():
    """Every ``recompute`` mode computes the same loss and gradients as ``none`` (fp32, the same weights), and keeps
    fewer bytes alive between forward and backward (counted by a dispatch mode, which also sees what activation
    checkpointing holds: saved-tensor hooks miss the checkpoints' inputs)."""
    from benchmarks.memory import held_bytes

    results = {}
    for mode in ("none", "mlp", "norms", "block"):
        torch.manual_seed(0)
        cfg = small(conditioning="text", caption_channels=16, depth=4, hidden_size=64, recompute=mode,
                    kernel_backend="auto")
        m = randomize(VideoDiT(cfg)).train()
        torch.manual_seed(1)
        x, t, kw = inputs(cfg)
        loss = (m(x, t, **kw) ** 2).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
        held = held_bytes(lambda m=m, x=x, t=t, kw=kw: (m(x, t, **kw) ** 2).mean(),
                          lambda loss: loss.backward())["held_bytes"]
        results[mode] = (loss.detach(), grads, held)
    ref_loss, ref_grads, ref_held = results["none"]
    for mode in ("mlp", "norms", "block"):
        loss, grads, held = results[mode]
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for n, g in grads.items():
            torch.testing.assert_close(g, ref_grads[n], rtol=1e-4, atol=1e-6,
                                       msg=lambda s, n=n, mode=mode: f"{mode} {n}: {s}")
    assert ref_held > results["mlp"][2] > results["norms"][2] > results["block"][2], \
        {k: v[2] for k, v in results.items()}
