"""torch.compile of a whole VideoDiT with the fused ops: no graph breaks, and the compiled step equals eager.

Under Dynamo, dispatch reads each argument's static facts in traced code and decides once, outside the
trace, on stand-ins (dit_video/kernels/standin.py); the chosen custom op goes into the graph. These tests check:

- ``torch._dynamo.explain`` counts one graph and zero breaks for the text model (auto and torch backends,
  with and without activation checkpointing, every ``recompute`` mode);
- the decisions made while tracing are the ones eager dispatch makes for the same calls;
- forward output and every parameter gradient of the compiled model meet the numerics rule against an
  fp64 eager run: ``|compiled - fp64| <= 2 |eager fp32 - fp64| + eps * sqrt(n) * scale``. Compilation
  reorders and fuses fp32 arithmetic (Inductor), so bitwise equality is not the contract; twice eager's
  own error plus the summation-order floor is (dit_video/kernels/numerics.py). ``aot_eager`` runs fast; the Inductor
  run (the real one, ~1 min of C++ compilation on a CPU) is marked slow.
"""

from __future__ import annotations

import pytest
import torch

from dit_video import VideoDiT, VideoDiTConfig
from dit_video.kernels import dispatch, numerics


def _config(backend: str, recompute: str = "none", ckpt: bool = False, dtype=torch.float32) -> VideoDiTConfig:
    return VideoDiTConfig(in_channels=4, num_frames=4, sample_size=[8, 8], patch_size=[1, 2, 2], hidden_size=32,
                          depth=2, num_heads=2, modulation="adaln_single", conditioning="text", caption_channels=16,
                          learn_sigma=True, kernel_backend=backend, gradient_checkpointing=ckpt, recompute=recompute)


def _model(cfg: VideoDiTConfig, dtype=torch.float32) -> VideoDiT:
    torch.manual_seed(0)
    m = VideoDiT(cfg).train()
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):  # non-zero everywhere (DiT's init zeroes the gates): every
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.1)  # gradient is real
    return m.to(dtype)


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 4, 8, 8, generator=g).to(dtype)
    t = torch.tensor([10.0, 500.0])
    text = torch.randn(2, 5, 16, generator=g).to(dtype)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return x, t, text, mask


def _step(fn, model, inputs):
    for p in model.parameters():
        p.grad = None
    x, t, text, mask = inputs
    out = fn(x, t, text=text, text_mask=mask)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    (out * cot).sum().backward()
    return [out.detach()] + [p.grad.detach().clone() for p in model.parameters()]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend,recompute,ckpt", [("auto", "none", False), ("torch", "none", False),
                                                    ("auto", "none", True), ("auto", "mlp", False),
                                                    ("auto", "norms", False), ("torch", "norms", False),
                                                    ("auto", "block", False)])
def test_no_graph_breaks(backend, recompute, ckpt):
    m = _model(_config(backend, recompute, ckpt))
    x, t, text, mask = _inputs()
    ex = torch._dynamo.explain(m)(x, t, text=text, text_mask=mask)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), \
        f"{ex.graph_count} graphs, {ex.graph_break_count} breaks: {[str(b.reason)[:200] for b in ex.break_reasons]}"
    assert dispatch._trace_backend == [], "use_backend's trace-time stack leaked out of the compiled region"


def test_traced_decisions_are_eager_decisions(monkeypatch):
    """What dispatch picks from static facts while tracing equals what it picks from the real tensors."""
    eager, traced = [], []
    real_resolve, real_facts = dispatch.resolve, dispatch._resolve_facts

    def spy_resolve(op, backend, *args, **kwargs):
        impl = real_resolve(op, backend, *args, **kwargs)
        if not torch.compiler.is_compiling():
            eager.append((op, impl.backend, impl.fn))
        return impl

    def spy_facts(op, backend, arg_facts, kw_facts):
        key, i = real_facts(op, backend, arg_facts, kw_facts)
        impl = dispatch._REGISTRY[key][i]
        traced.append((op, impl.backend, impl.fn))
        return key, i

    monkeypatch.setattr(dispatch, "resolve", spy_resolve)
    monkeypatch.setattr(dispatch, "_resolve_facts", torch.compiler.assume_constant_result(spy_facts))
    m = _model(_config("auto", "norms"))
    x, t, text, mask = _inputs()
    with torch.no_grad():
        m(x, t, text=text, text_mask=mask)  # eager: dispatch() -> resolve()
        torch._dynamo.explain(m)(x, t, text=text, text_mask=mask)
    assert traced and sorted(map(repr, traced)) == sorted(map(repr, eager))


def _rule(compiled: list, eager: list, ref: list, n: int) -> None:
    labels = ["out"] + [f"grad[{name}]" for name in range(len(compiled) - 1)]
    for label, a, b, c in zip(labels, compiled, eager, ref, strict=True):
        numerics.check(label, a, b, c, torch.float32, n)


def _compare(compile_backend: str, backend: str, recompute: str, ckpt: bool) -> None:
    cfg = _config(backend, recompute, ckpt)
    m = _model(cfg)
    inputs = _inputs()
    eager = _step(m, m, inputs)
    compiled = _step(torch.compile(m, backend=compile_backend), m, inputs)
    ref_model = _model(_config("torch"), torch.float64)  # fp64: the reference path (no fused kernel takes fp64)
    ref = _step(ref_model, ref_model, _inputs(torch.float64))
    # n: the longest reduction feeding a value: a weight gradient sums over every token (2 x 4 x 16), fc2 over
    # the MLP width (128), the caption projection over its 16 inputs
    _rule(compiled, eager, ref, n=max(2 * 4 * 16, 4 * cfg.hidden_size))


@pytest.mark.parametrize("backend,recompute,ckpt", [("auto", "none", False), ("auto", "norms", False),
                                                    ("auto", "none", True), ("torch", "mlp", False)])
def test_compiled_matches_eager_aot(backend, recompute, ckpt):
    _compare("aot_eager", backend, recompute, ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("backend,recompute,ckpt", [("auto", "norms", True), ("auto", "none", False)])
def test_compiled_matches_eager_inductor(backend, recompute, ckpt):
    _compare("inductor", backend, recompute, ckpt)
