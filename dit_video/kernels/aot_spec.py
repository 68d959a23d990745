"""What one ahead-of-time compiled Triton kernel is: a leaf module the kernel files declare their specs with.

Each kernel module's ``aot_kernels(arch)`` returns :class:`AotKernel` specs (built with
:func:`make_spec`) and :mod:`dit_video.kernels.aot` compiles them; kernel files import this module,
never ``aot.py``, so nothing imports in a circle. The FLOPs and bytes of a spec come from
:mod:`dit_video.kernels.roofline`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TL_DTYPE = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32", "u8": "*u8"}


@dataclass
class AotKernel:
    """One (kernel, config) to compile. ``signature``/``constexprs``/``attrs`` as for ASTSource."""

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    attrs: dict[tuple[int, ...], list]
    num_warps: int
    num_stages: int
    config: str
    shape: str = ""
    flops: float = 0.0
    nbytes: float = 0.0
    needs_wgmma: bool = False
    waiver: str = ""  # why a wgmma requirement is knowingly waived for this spec (printed in the row)


def make_spec(name: str, fn: Any, *, pointers: dict[str, str], constexprs: dict[str, Any],
              floats: Iterable[str] = (), ones: Iterable[str] = (), div16: Iterable[str] = (),
              num_warps: int, num_stages: int, config: str, **kw) -> AotKernel:
    """Build an :class:`AotKernel` from a jit function's argument names.

    ``pointers``: arg -> element type ("bf16", "fp32", "u8"); ``floats``: fp32 scalars; other
    non-constexpr args are i32. ``ones`` are int args fixed to 1 (as Triton specializes a unit
    stride at run time); ``div16`` are pointer or int args known divisible by 16 (the alignment
    Triton detects at run time for allocations and for strides that are multiples of 16).
    """
    names = list(fn.arg_names)
    cx = dict(constexprs)
    for n in ones:
        cx[n] = 1
    floats = set(floats)
    sig: dict[str, str] = {}
    for n in names:
        if n in cx:
            sig[n] = "constexpr"
        elif n in pointers:
            sig[n] = TL_DTYPE[pointers[n]]
        elif n in floats:
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    unknown = set(cx) - set(names)
    if unknown:
        raise ValueError(f"{name}: constexprs {sorted(unknown)} are not arguments of {fn.__name__}")
    aligned = set(pointers) | set(div16)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in aligned and sig[n] != "constexpr"}
    return AotKernel(name, fn, sig, cx, attrs, num_warps, num_stages, config, **kw)
