"""The two bf16 paths of the C++ CPU attention kernel, held to the numerics rule on the same cases.

bf16 takes the bf16-GEMM path (csrc/cpu/attention_bf16.cpp) where an engine serves it: oneDNN's BRGeMM where
it packs bf16 (AMX Xeons; keys > 16), else the vdpbf16ps micro-kernel (AVX512-BF16 CPUs); DIT_VIDEO_CPU_BF16_GEMM
picks the engine: ``brgemm``, ``dpbf16`` or ``off`` (the fp32-scratch path). Every engine must meet the
rule on the same cases; one the CPU lacks runs the scratch path, so every run checks what serves it.
"""

import pytest
import torch

try:
    import contract
except ImportError:  # tests/ laid out as a package
    from . import contract

from dit_video.kernels import dispatch
from dit_video.kernels.numerics import NumericsError

BF16_CASES = [
    dict(name="spatial s40 d40 rows", layout="spatial", b=1, t=2, s=40, h=2, d=40, mask="rows"),
    dict(name="temporal t33 d64", layout="temporal", b=1, t=33, s=3, h=2, d=64),
    dict(name="cross lk37 masked", layout="cross", b=1, t=2, s=20, lk=37, h=2, d=24, mask="some"),
    dict(name="contiguous 70x100 d72", layout="contiguous", lq=70, lk=100, h=2, d=72, batch=(2,)),
    dict(name="spatial s256 d64", layout="spatial", b=1, t=1, s=256, h=1, d=64),
]


@pytest.mark.parametrize("path", ["brgemm", "dpbf16", "off"])
@pytest.mark.parametrize("spec", BF16_CASES, ids=lambda s: s["name"])
def test_bf16_paths_meet_the_rule(monkeypatch, path, spec):
    monkeypatch.setenv("DIT_VIDEO_CPU_BF16_GEMM", path)
    impl = next((i for i in dispatch.implementations() if i.op == "attention" and i.backend == "cpu"), None)
    if impl is None:
        pytest.skip("the C++ CPU backend is not built here (no compiler)")
    case = contract.attention_case(dtype=torch.bfloat16, seed=3, **spec)
    assert contract.refusal(impl, case) is None
    try:
        contract.run_rule(impl, case)
    except NumericsError as e:
        raise AssertionError(f"{path} on {spec['name']}: {e}") from None
    contract.semantic_checks(impl, case)
