"""The kernel contract: what every registered implementation of a fused op must do, whoever wrote it.

For each implementation (``dispatch.implementations()``: every (op, backend, kernel) that registered)
and each case it accepts (its ``check`` returns None), the output and every input gradient meet the
rule of :mod:`dit_video.kernels.numerics` against the torch reference, with every buffer the kernel
allocates poisoned with NaN first (an element it never writes fails). Cases it refuses must come with
a reason, and ``auto`` must still serve them. A new backend gets all of this by registering.

Cases come two ways: a fixed list of named shapes that matter (odd sizes, size 1, primes, head dims
that are not powers of two, the real spatial/temporal views of a fused ``[B, T, S, 3, H, D]``
projection, text keys broadcast over frames, key-padding masks with fully masked rows), and seeded
random cases (:func:`random_case`): shapes, strides, views, masks, scales and dtypes drawn from a
``random.Random(seed)``, so a failure names a seed that reproduces it anywhere.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dit_video.kernels import numerics, triton_common
from dit_video.kernels.dispatch import Impl
from dit_video.kernels.lean_adaln_linear import adaln_linear_ref
from dit_video.kernels.lean_adaln_mlp import adaln_mlp_ref
from dit_video.kernels.lean_gated_linear import gated_linear_ref
from dit_video.kernels.reference import (
    adaln_modulate_ref,
    attention_ref,
    gated_residual_adaln_ref,
    gelu_tanh_ref,
    rope3d_ref,
)

LEAN_OPS = ("gated_linear", "adaln_linear", "adaln_mlp")  # composites: the memory-lean block ops
OPS = ("attention", "adaln_modulate", "gated_residual_adaln", "rope3d", "gelu_tanh", *LEAN_OPS)
REFERENCE = {"attention": attention_ref, "adaln_modulate": adaln_modulate_ref,
             "gated_residual_adaln": gated_residual_adaln_ref, "rope3d": rope3d_ref, "gelu_tanh": gelu_tanh_ref,
             "gated_linear": gated_linear_ref, "adaln_linear": adaln_linear_ref, "adaln_mlp": adaln_mlp_ref}
DTYPES = (torch.float32, torch.bfloat16)


@dataclass
class Case:
    """One call: leaf tensors (in the test dtype), how they become the op's arguments, reduction lengths."""

    name: str
    op: str
    leaves: list[torch.Tensor]
    build: Callable[[list[torch.Tensor]], tuple]  # leaves -> positional args
    kwargs: dict = field(default_factory=dict)
    n: int = 1  # the longest reduction feeding any output or gradient (numerics.floor)
    grad_inputs: list[int] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(t.dtype for t in self.leaves if t.is_floating_point())

    def args(self, leaves=None) -> tuple:
        return self.build(self.leaves if leaves is None else leaves)


def impl_id(impl: Impl) -> str:
    return f"{impl.op}-{impl.backend}-{getattr(impl.fn, '__name__', 'fn')}"


def device_for(impl: Impl) -> torch.device | None:
    """Where this implementation runs in the tests, or None when that device is absent here."""
    if impl.backend in ("cuda", "flash"):
        return torch.device("cuda") if torch.cuda.is_available() else None
    if impl.backend == "triton":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu") if triton_common.interpreting() else None
    return torch.device("cpu")


@contextlib.contextmanager
def poisoned():
    """Fresh buffers start as NaN: Triton launchers' (triton_common.POISON) and torch.empty / at::empty's."""
    prev_poison = triton_common.POISON
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    triton_common.POISON = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        triton_common.POISON = prev_poison
        torch.use_deterministic_algorithms(prev_det)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def to_device(case: Case, device: torch.device) -> Case:
    def move(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    return Case(case.name, case.op, [move(t) for t in case.leaves], case.build,
                {k: move(v) for k, v in case.kwargs.items()}, case.n, case.grad_inputs)


def refusal(impl: Impl, case: Case) -> str | None:
    """The implementation's reason for not serving this case, or None."""
    return impl.check(*case.args(), **case.kwargs)


def run_rule(impl: Impl, case: Case) -> dict[str, tuple[float, float, float]]:
    """The numerics rule for one accepted case (raises numerics.NumericsError)."""
    ref = REFERENCE[case.op]
    kw = case.kwargs

    def kernel(*args):
        return impl.fn(*args, **kw)

    def reference(*args):
        return ref(*args, **kw)

    with poisoned():
        return numerics.compare(kernel, reference, case.leaves, build=case.build, grad_inputs=case.grad_inputs,
                                reduction=case.n)


def semantic_checks(impl: Impl, case: Case) -> None:
    """What numbers alone do not say. Attention: o comes back in q's layout (the token layout for the
    temporal view, so the output projection reads it without a copy), and a query with no valid key
    gets exactly 0 and passes exactly 0 gradient to q."""
    if case.op != "attention":
        return
    from dit_video.kernels.layout import empty_in_layout_of

    kw = case.kwargs
    outs, grads = numerics.run(lambda *a: impl.fn(*a, **kw), case.leaves, build=case.build)
    o, q = outs[0], case.args()[0]
    want = empty_in_layout_of(q, tuple(o.shape)).stride() if tuple(o.shape) == tuple(q.shape) else None
    assert want is None or o.stride() == want, f"{case.name}: o strides {o.stride()}, q's layout gives {want}"
    m = kw.get("key_padding_mask")
    if m is not None:
        batch = tuple(o.shape[:-3])
        valid = m.expand(batch + m.shape[-1:]).any(-1)
        assert (o[~valid] == 0).all(), f"{case.name}: queries with no valid key are not exactly 0"
        if tuple(case.leaves[0].shape) == tuple(q.shape):  # q is its own leaf
            gq = grads[0].expand(batch + tuple(q.shape[-3:]))
            assert (gq[~valid] == 0).all(), f"{case.name}: fully masked queries pass gradient to q"


def outputs_and_grads(impl: Impl, case: Case) -> list[torch.Tensor]:
    kw = case.kwargs
    outs, grads = numerics.run(lambda *a: impl.fn(*a, **kw), case.leaves, build=case.build,
                               grad_inputs=case.grad_inputs)
    return outs + grads


# ------------------------------------------------------------------------------------------- builders
def _randn(shape, dtype, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def attention_case(name: str, dtype, *, layout: str, b: int = 1, t: int = 1, s: int = 1, lq: int = 1, lk: int = 1,
                   h: int = 1, d: int = 8, batch: tuple[int, ...] = (1,), mask: str | None = None,
                   scale: float | None = None, seed: int = 0) -> Case:
    """Attention in one of the layouts the model uses.

    ``contiguous``: q [*batch, lq, h, d], k/v [*batch, lk, h, d] separate leaves.
    ``spatial`` / ``temporal`` / ``full``: views of one fused [b, t, s, 3, h, d] leaf (sequence s, t or t*s).
    ``cross``: q [b, t, s, h, d] against text k/v [b, 1, lk, 2, h, d] (stride-0 over frames).
    ``mask``: None, "some" (random keys off) or "rows" (some sequences with no valid key at all).
    """
    g = _gen(seed)
    kw: dict = {"scale": scale}
    if layout == "contiguous":
        leaves = [_randn(batch + (lq, h, d), dtype, g), _randn(batch + (lk, h, d), dtype, g),
                  _randn(batch + (lk, h, d), dtype, g)]

        def build(lv):
            return tuple(lv)

        mbatch, n = batch, max(d, lq, lk)
    elif layout in ("spatial", "temporal", "full"):
        leaves = [_randn((b, t, s, 3, h, d), dtype, g)]

        def build(lv, layout=layout):
            q, k, v = lv[0].unbind(3)
            if layout == "temporal":
                return tuple(x.transpose(1, 2) for x in (q, k, v))
            if layout == "full":
                return tuple(x.flatten(1, 2) for x in (q, k, v))
            return q, k, v

        seq = {"spatial": s, "temporal": t, "full": t * s}[layout]
        mbatch = {"spatial": (b, t), "temporal": (b, s), "full": (b,)}[layout]
        lk, n = seq, max(d, seq)
    elif layout == "cross":
        leaves = [_randn((b, t, s, h, d), dtype, g), _randn((b, 1, lk, 2, h, d), dtype, g)]

        def build(lv):
            k, v = lv[1].unbind(3)
            return lv[0], k, v

        mbatch, n = (b, 1), max(d, lk, t * s)
    else:
        raise ValueError(layout)
    if mask is not None:
        m = torch.rand(mbatch + (lk,), generator=g) > 0.4
        m.view(-1, lk)[:, 0] = True
        if mask == "rows":
            m.view(-1, lk)[0] = False  # the first sequence has no valid key: o = 0, no gradient
        kw["key_padding_mask"] = m
    return Case(name, "attention", leaves, build, kw, n)


def _strided(shape, dtype, g, how: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """A base leaf and the view of it that is a [B, T, ..., D] argument: contiguous, transposed (T stored
    inward) or a slice of a wider row (gaps between rows). Gradients flow back to the base."""
    if how == "transposed" and len(shape) >= 4:
        perm = (0,) + tuple(range(2, len(shape) - 1)) + (1, len(shape) - 1)
        inv = [perm.index(i) for i in range(len(shape))]
        return _randn([shape[i] for i in perm], dtype, g), lambda base: base.permute(inv)
    if how == "sliced":
        d = shape[-1]
        return _randn(tuple(shape[:-1]) + (d + 3,), dtype, g), lambda base: base[..., :d]
    return _randn(shape, dtype, g), lambda base: base


def adaln_case(name: str, dtype, op: str, x_shape: tuple[int, ...], mod: str = "sample", *, x_how: str = "plain",
               y_how: str = "transposed", eps: float = 1e-6, seed: int = 0) -> Case:
    """``adaln_modulate(x, shift, scale)`` or ``gated_residual_adaln(x, y, gate, shift, scale)``; modulation
    per sample [B, D] or per frame [B, T, D]; x / y contiguous, transposed or sliced views of their leaves."""
    g = _gen(seed)
    d = x_shape[-1]
    ms = (x_shape[0], d) if mod == "sample" else (x_shape[0], x_shape[1], d)
    tokens = math.prod(x_shape[:-1]) // math.prod(ms[:-1])
    x, xv = _strided(x_shape, dtype, g, x_how)
    nmod = 3 if op == "gated_residual_adaln" else 2
    mods = [_randn(ms, dtype, g, 0.5) for _ in range(nmod)]
    if op == "gated_residual_adaln":
        y, yv = _strided(x_shape, dtype, g, y_how)
        leaves = [x, y, *mods]

        def build(lv):
            return (xv(lv[0]), yv(lv[1]), *lv[2:])
    else:
        leaves = [x, *mods]

        def build(lv):
            return (xv(lv[0]), *lv[1:])

    return Case(name, op, leaves, build, {"eps": eps}, max(d, tokens))


def rope_case(name: str, dtype, shape: tuple[int, int, int, int, int], *, view: int | None = None,
              seed: int = 0) -> Case:
    """x [B, T, S, H, D] (contiguous, or view ``view`` (0 q, 1 k) of a fused [B, T, S, 3, H, D]) with fp32 tables
    [T, S, D/2]."""
    g = _gen(seed)
    b, t, s, h, d = shape
    x = _randn((b, t, s, 3, h, d), dtype, g) if view is not None else _randn(shape, dtype, g)
    ang = torch.rand(t, s, d // 2, generator=g) * 6.28
    cos, sin = ang.cos(), ang.sin()

    def build(lv):
        xx = lv[0].unbind(3)[view] if view is not None else lv[0]
        return xx, cos, sin

    return Case(name, "rope3d", [x], build, {}, 1, grad_inputs=[0])


def lean_case(name: str, dtype, op: str, x_shape: tuple[int, ...], mod: str = "sample", *, d_in: int = 24,
              hidden: int = 40, bias: bool = True, x_how: str = "plain", eps: float = 1e-6, seed: int = 0) -> Case:
    """A memory-lean op on tokens ``x_shape`` (``[B, ..., D]``) with modulation per sample or per frame.

    ``gated_linear(x, o, w, b, gate)``: o ``[..., d_in]``; ``adaln_linear(x, shift, scale, w, b)``: w
    ``[d_in, D]`` (d_in outputs); ``adaln_mlp(x, shift, scale, gate, w1, b1, w2, b2)``: hidden width
    ``hidden``. ``x_how``: x as a plain, transposed or sliced view of its leaf. ``bias=False``: no biases.
    """
    g = _gen(seed)
    d = x_shape[-1]
    ms = (x_shape[0], d) if mod == "sample" else (x_shape[0], x_shape[1], d)
    x, xv = _strided(x_shape, dtype, g, x_how)

    def w(o, i):
        return _randn((o, i), dtype, g, i ** -0.5)

    def b(o):
        return _randn((o,), dtype, g, 0.5) if bias else None

    tokens = math.prod(x_shape[:-1])
    if op == "gated_linear":
        params = [_randn(x_shape[:-1] + (d_in,), dtype, g), w(d, d_in), b(d), _randn(ms, dtype, g, 0.5)]
        n = max(tokens, d_in, d)
    elif op == "adaln_linear":
        params = [_randn(ms, dtype, g, 0.5), _randn(ms, dtype, g, 0.5), w(d_in, d), b(d_in)]
        n = max(tokens, d_in, d)
    else:
        params = [_randn(ms, dtype, g, 0.5), _randn(ms, dtype, g, 0.5), _randn(ms, dtype, g, 0.5), w(hidden, d),
                  b(hidden), w(d, hidden), b(d)]
        n = max(tokens, hidden, d)
    slots = [p is not None for p in params]
    leaves = [x] + [p for p in params if p is not None]

    def build(lv):
        it = iter(lv[1:])
        return (xv(lv[0]), *[next(it) if present else None for present in slots])

    return Case(name, op, leaves, build, {"eps": eps} if op != "gated_linear" else {}, n)


def gelu_case(name: str, dtype, shape: tuple[int, ...], *, how: str = "plain", scale: float = 3.0,
              seed: int = 0) -> Case:
    """GELU on ``shape`` (values ~ N(0, scale^2): both tails, the saturated ones included), contiguous or as a
    sliced view with gaps between rows (which the one-pass CPU kernel refuses)."""
    g = _gen(seed)
    x, view = _strided(shape, dtype, g, how) if how != "plain" else (_randn(shape, dtype, g), lambda t: t)
    x = (x.float() * scale).to(dtype)

    def build(lv):
        return (view(lv[0]),)

    return Case(name, "gelu_tanh", [x], build, {}, 1, grad_inputs=[0])


def fixed_cases(op: str, device: torch.device | None = None) -> list[Case]:
    """The named cases (both dtypes) that every implementation of ``op`` must pass when it accepts them
    (on a CUDA device also model-sized ones: widths 384 / 1152 / 2048, 64 frames, head dim 128)."""
    out: list[Case] = []
    for dt in DTYPES:
        if device is not None and device.type == "cuda":
            tag = "fp32" if dt == torch.float32 else "bf16"
            if op == "attention":
                out += [attention_case(f"gpu-temporal-t64-d128-{tag}", dt, layout="temporal", t=64, s=2, h=2, d=128,
                                       mask="rows"),
                        attention_case(f"gpu-spatial-s256-d64-{tag}", dt, layout="spatial", b=2, t=2, s=256, h=6,
                                       d=64)]
            elif op in ("adaln_modulate", "gated_residual_adaln"):
                out += [adaln_case(f"gpu-{'x'.join(map(str, xs))}-{mod}-{tag}", dt, op, xs, mod)
                        for xs, mod in (((2, 4, 7, 384), "frame"), ((1, 2, 33, 1152), "sample"),
                                        ((1, 2, 3, 2048), "frame"))]
        tag = "fp32" if dt == torch.float32 else "bf16"
        if op == "attention":
            out += [
                attention_case(f"dense-17x113-h2-d40-{tag}", dt, layout="contiguous", lq=17, lk=113, h=2, d=40),
                attention_case(f"dense-1x1-{tag}", dt, layout="contiguous", d=8),
                attention_case(f"dense-batch3x1-5x17-d80-{tag}", dt, layout="contiguous", batch=(3, 1), lq=5, lk=17,
                               d=80),
                attention_case(f"dense-9x7-d256-{tag}", dt, layout="contiguous", lq=9, lk=7, d=256),
                attention_case(f"dense-batch2x1x3-11-d32-{tag}", dt, layout="contiguous", batch=(2, 1, 3), lq=11,
                               lk=11, h=2, d=32),
                attention_case(f"spatial-s17-d96-{tag}", dt, layout="spatial", t=2, s=17, h=2, d=96),
                attention_case(f"temporal-t17-d96-{tag}", dt, layout="temporal", t=17, s=2, h=2, d=96),
                attention_case(f"temporal-t16-s5-d64-{tag}", dt, layout="temporal", b=2, t=16, s=5, h=3, d=64),
                attention_case(f"temporal-t5-d40-{tag}", dt, layout="temporal", b=2, t=5, s=3, h=2, d=40),
                attention_case(f"temporal-t33-d17-{tag}", dt, layout="temporal", t=33, s=2, d=17),
                attention_case(f"temporal-t1-{tag}", dt, layout="temporal", b=2, t=1, s=4, d=8),
                attention_case(f"temporal-mask-rows-{tag}", dt, layout="temporal", b=2, t=13, s=4, h=2, d=24,
                               mask="rows"),
                attention_case(f"temporal-scale0.3-mask-{tag}", dt, layout="temporal", b=2, t=9, s=3, h=2, d=16,
                               mask="some", scale=0.3),
                attention_case(f"full-t3-s5-{tag}", dt, layout="full", b=1, t=3, s=5, h=2, d=16),
                attention_case(f"cross-text-mask-rows-{tag}", dt, layout="cross", b=2, t=2, s=17, lk=19, d=40,
                               mask="rows"),
                attention_case(f"cross-short-text-{tag}", dt, layout="cross", b=2, t=2, s=9, lk=7, h=2, d=24,
                               mask="rows"),
            ]
        elif op in ("adaln_modulate", "gated_residual_adaln"):
            for shape, mod in (((2, 3, 17, 40), "sample"), ((2, 3, 17, 40), "frame"), ((1, 1, 1, 17), "sample"),
                               ((2, 3, 11, 96), "frame"), ((1, 4, 7, 37), "frame"), ((2, 2, 3, 2, 24), "frame"),
                               ((3, 11, 16), "sample"), ((1, 1, 1, 1), "sample")):
                name = f"{'x'.join(map(str, shape))}-{mod}-{tag}"
                out.append(adaln_case(name, dt, op, shape, mod, x_how="transposed" if op == "adaln_modulate"
                                      else "plain"))
        elif op in LEAN_OPS:
            for shape, mod, kw in (((2, 3, 17, 40), "sample", {}), ((2, 3, 17, 40), "frame", {}),
                                   ((1, 1, 1, 8), "sample", {"d_in": 8, "hidden": 8}),
                                   ((2, 4, 7, 37), "frame", {"d_in": 19, "hidden": 61, "bias": False}),
                                   ((3, 11, 16), "sample", {"x_how": "sliced"}),
                                   ((2, 3, 5, 24), "frame", {"x_how": "transposed", "hidden": 96})):
                name = f"{'x'.join(map(str, shape))}-{mod}-{'-'.join(f'{k}{v}' for k, v in kw.items())}-{tag}"
                out.append(lean_case(name, dt, op, shape, mod, **kw))
        elif op == "gelu_tanh":
            out += [gelu_case(f"gelu-1-{tag}", dt, (1,)), gelu_case(f"gelu-4099-{tag}", dt, (4099,)),
                    gelu_case(f"gelu-2x3x4097-{tag}", dt, (2, 3, 4097), scale=8.0),  # > one 4096-element task
                    gelu_case(f"gelu-64x1536-{tag}", dt, (64, 1536)),
                    gelu_case(f"gelu-sliced-5x24-{tag}", dt, (5, 24), how="sliced")]
        elif op == "rope3d":
            out += [rope_case(f"rope-2x3x5x2x16-{tag}", dt, (2, 3, 5, 2, 16)),
                    rope_case(f"rope-kview-2x3x6x2x40-{tag}", dt, (2, 3, 6, 2, 40), view=1),
                    rope_case(f"rope-qview-1x4x3x2x24-{tag}", dt, (1, 4, 3, 2, 24), view=0),
                    rope_case(f"rope-1x1x1x1x2-{tag}", dt, (1, 1, 1, 1, 2))]
    return out


def random_case(op: str, seed: int) -> Case:
    """A seeded random case of ``op``: layout, sizes, strides, mask, scale, eps and dtype all drawn."""
    r = random.Random(f"{op}:{seed}")
    dt = r.choice(DTYPES)
    name = f"{op}-seed{seed}"
    if op == "attention":
        layout = r.choice(["contiguous", "spatial", "temporal", "temporal", "full", "cross"])
        d = r.choice([8, 16, 17, 24, 32, 40, 64, 80, 8, 16])
        kw = dict(layout=layout, h=r.randint(1, 3), d=d, scale=r.choice([None, None, r.uniform(0.05, 0.6)]),
                  mask=r.choice([None, None, "some", "rows"]), seed=seed)
        if layout == "contiguous":
            kw.update(batch=tuple(r.randint(1, 3) for _ in range(r.randint(1, 3))), lq=r.randint(1, 17),
                      lk=r.randint(1, 33))
        elif layout == "cross":
            kw.update(b=r.randint(1, 2), t=r.randint(1, 3), s=r.randint(1, 9), lk=r.randint(1, 17))
        else:
            kw.update(b=r.randint(1, 2), t=r.randint(1, 12), s=r.randint(1, 6))
            if layout == "full":
                kw.update(t=r.randint(1, 4), s=r.randint(1, 6))
        return attention_case(name, dt, **kw)
    if op in ("adaln_modulate", "gated_residual_adaln"):
        d = r.choice([1, 7, 8, 16, 24, 37, 48, 96])
        kind = r.choice(["btsd", "btsd", "bnd", "bthwd"])
        b = r.randint(1, 3)
        shape = {"btsd": (b, r.randint(1, 4), r.randint(1, 9), d), "bnd": (b, r.randint(1, 13), d),
                 "bthwd": (b, r.randint(1, 3), r.randint(1, 3), r.randint(1, 3), d)}[kind]
        mod = "sample" if kind == "bnd" else r.choice(["sample", "frame"])
        return adaln_case(name, dt, op, shape, mod, x_how=r.choice(["plain", "transposed", "sliced"]),
                          y_how=r.choice(["plain", "transposed", "sliced"]), eps=r.choice([1e-6, 1e-5]), seed=seed)
    if op == "rope3d":
        shape = (r.randint(1, 2), r.randint(1, 4), r.randint(1, 6), r.randint(1, 3), 2 * r.randint(1, 20))
        return rope_case(name, dt, shape, view=r.choice([None, 0, 1]), seed=seed)
    if op == "gelu_tanh":
        shape = tuple(r.randint(1, 40) for _ in range(r.randint(1, 3))) + (r.choice([1, 8, 17, 64, 1536]),)
        return gelu_case(name, dt, shape, how=r.choice(["plain", "plain", "plain", "sliced"]),
                         scale=r.choice([0.5, 3.0, 10.0]), seed=seed)
    if op in LEAN_OPS:
        d = r.choice([1, 7, 8, 16, 24, 37, 48])
        b = r.randint(1, 3)
        kind = r.choice(["btsd", "btsd", "bnd"])
        shape = (b, r.randint(1, 4), r.randint(1, 9), d) if kind == "btsd" else (b, r.randint(1, 13), d)
        mod = "sample" if kind == "bnd" else r.choice(["sample", "frame"])
        return lean_case(name, dt, op, shape, mod, d_in=r.choice([1, 8, 17, 32]), hidden=r.choice([4, 24, 64, 96]),
                         bias=r.random() < 0.8, x_how=r.choice(["plain", "transposed", "sliced"]),
                         eps=r.choice([1e-6, 1e-5]), seed=seed)
    raise ValueError(op)
