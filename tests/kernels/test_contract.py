"""Every registered kernel implementation against the torch reference (see contract.py).

- ``test_fixed_cases``: the named cases, per implementation;
- ``test_fuzz``: 100+ seeded random cases per op through every implementation that runs here (the
  C++ CPU kernels, Triton under the interpreter; CUDA ones on a GPU), each served case held to the
  rule, each refused one served by ``auto`` instead, and a minimum share served (not vacuous);
- ``test_repeatable``: 20 runs of the same cases are bitwise identical;
- ``test_rule_catches_wrong_kernels``: the harness fails kernels that are slightly wrong.
"""

from __future__ import annotations

import pytest
import torch

try:
    import contract
except ImportError:  # tests/ laid out as a package
    from . import contract

from dit_video.kernels import dispatch, numerics
from dit_video.kernels.ops import (
    adaln_linear,
    adaln_mlp,
    adaln_modulate,
    attention,
    gated_linear,
    gated_residual_adaln,
    gelu_tanh,
    rope3d,
)

PUBLIC = {"attention": attention, "adaln_modulate": adaln_modulate, "gated_residual_adaln": gated_residual_adaln,
          "rope3d": rope3d, "gelu_tanh": gelu_tanh, "gated_linear": gated_linear, "adaln_linear": adaln_linear,
          "adaln_mlp": adaln_mlp}
# every fused implementation, and the one implementation of each composite op (registered under "torch")
IMPLS = [i for i in dispatch.implementations() if i.backend != "torch" or dispatch.is_composite(i.op)]
FUZZ_SEEDS = range(100)
# share of random cases each implementation must accept (its check); below this the fuzz proves little
MIN_SERVED = {"attention-cpu-attention": 0.9, "attention-triton-attention": 0.9,
              "attention-triton-packed_attention": 0.6,
              "gelu_tanh-cpu-gelu_tanh": 0.6}  # a quarter of the gelu cases are strided views, which it refuses


def _device_or_skip(impl):
    dev = contract.device_for(impl)
    if dev is None:
        pytest.skip(f"{contract.impl_id(impl)} runs on {'a CUDA device' if impl.backend != 'triton' else 'CUDA'}, "
                    "absent here")
    return dev


def test_every_op_has_a_fused_implementation():
    ops = {i.op for i in IMPLS}
    assert ops == set(contract.OPS), f"ops without any non-reference implementation: {set(contract.OPS) - ops}"


@pytest.mark.parametrize("impl", IMPLS, ids=contract.impl_id)
def test_fixed_cases(impl):
    dev = _device_or_skip(impl)
    served = 0
    for case in contract.fixed_cases(impl.op, dev):
        case = contract.to_device(case, dev)
        why = contract.refusal(impl, case)
        if why is not None:
            assert isinstance(why, str) and why, f"{case.name}: refused without a reason"
            continue
        try:
            contract.run_rule(impl, case)
        except numerics.NumericsError as e:
            raise AssertionError(f"{contract.impl_id(impl)} on {case.name}: {e}") from None
        contract.semantic_checks(impl, case)
        served += 1
    assert served > 0, f"{contract.impl_id(impl)} accepted none of the fixed cases"


@pytest.mark.parametrize("impl", IMPLS, ids=contract.impl_id)
def test_fuzz(impl):
    dev = _device_or_skip(impl)
    served, refused = 0, {}
    for seed in FUZZ_SEEDS:
        case = contract.to_device(contract.random_case(impl.op, seed), dev)
        why = contract.refusal(impl, case)
        if why is not None:
            refused[why.split(" ")[0]] = refused.get(why.split(" ")[0], 0) + 1
            out = PUBLIC[impl.op](*case.args(), **case.kwargs)  # auto serves it through another backend
            assert all(torch.isfinite(o).all() for o in (out if isinstance(out, tuple) else (out,)))
            continue
        try:
            contract.run_rule(impl, case)
        except numerics.NumericsError as e:
            raise AssertionError(f"{contract.impl_id(impl)} on {case.name} (reproduce with "
                                 f"contract.random_case({impl.op!r}, {seed})): {e}") from None
        served += 1
    share = served / len(FUZZ_SEEDS)
    want = MIN_SERVED.get(contract.impl_id(impl), 0.9)
    assert share >= want, f"{contract.impl_id(impl)} served {served}/{len(FUZZ_SEEDS)} random cases (refused: " \
                          f"{refused}); the fuzz needs >= {want:.0%}"


@pytest.mark.parametrize("impl", dispatch.implementations("gelu_tanh"), ids=contract.impl_id)
def test_gelu_backward_attribute_is_its_gradient(impl):
    """The lean MLP calls ``impl.fn.backward(grad, x)`` in its backward: it must be the op's own gradient."""
    dev = _device_or_skip(impl)
    for case in contract.fixed_cases("gelu_tanh", dev):
        case = contract.to_device(case, dev)
        if contract.refusal(impl, case) is not None:
            continue
        x = case.args()[0].detach().requires_grad_()
        g = torch.randn_like(x)
        (want,) = torch.autograd.grad(impl.fn(x), x, g)
        assert torch.equal(impl.fn.backward(g, x.detach()), want), case.name


@pytest.mark.parametrize("impl", IMPLS, ids=contract.impl_id)
def test_repeatable(impl):
    dev = _device_or_skip(impl)
    accepted = [c for c in (contract.to_device(contract.random_case(impl.op, s), dev) for s in range(12))
                if contract.refusal(impl, c) is None]
    cases = sorted(accepted, key=lambda c: sum(t.numel() for t in c.leaves))[:2]  # the two smallest
    assert cases, "no accepted case to repeat"
    for case in cases:
        first = contract.outputs_and_grads(impl, case)
        for _ in range(19):
            again = contract.outputs_and_grads(impl, case)
            assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True)), \
                f"{contract.impl_id(impl)} on {case.name}: not bitwise repeatable"


def test_rule_catches_wrong_kernels():
    """The harness is not vacuous: a slightly wrong op, a wrong gradient, or an unwritten element fail."""
    from dit_video.kernels.reference import attention_ref

    q, k, v = (torch.randn(1, 5, 1, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    numerics.compare(attention_ref, attention_ref, [q, k, v], reduction=8)  # the reference against itself

    def off_scale(q, k, v):
        return attention_ref(q, k, v, scale=8 ** -0.5 * 1.001)

    with pytest.raises(numerics.NumericsError, match="out0"):
        numerics.compare(off_scale, attention_ref, [q, k, v], reduction=8)

    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 1.001

    with pytest.raises(numerics.NumericsError, match="grad0"):
        numerics.compare(lambda q, k, v: attention_ref(WrongGrad.apply(q), k, v), attention_ref, [q, k, v],
                         reduction=8)

    def unwritten(q, k, v):
        o = attention_ref(q, k, v).clone()
        o[0, -1, 0, -1] = float("nan")
        return o

    with pytest.raises(numerics.NumericsError, match="non-finite"):
        numerics.compare(unwritten, attention_ref, [q, k, v], check_grads=False)


def test_floor_depends_on_dtype_and_shape_only():
    assert numerics.floor(torch.float32, 256, 2.0) == pytest.approx(2.0**-23 * 16 * 2.0)
    assert numerics.floor(torch.bfloat16, 1, 0.1) == 2.0**-8  # scale floored at 1
    assert numerics.floor(torch.float32, 0, 1.0) == 2.0**-23
