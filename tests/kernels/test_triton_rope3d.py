"""3D RoPE (dit_video/kernels/triton_rope3d.py): opcheck and refusals. Its numerics on the strided q/k views are in the
kernel contract suite, tests/kernels/test_contract.py."""

from __future__ import annotations

import torch

from dit_video.kernels import triton_rope3d
from dit_video.models.embeddings import rope3d_tables


def test_rope3d_opcheck_and_check():
    cos, sin = rope3d_tables((2, 2, 2), 16)
    x = torch.randn(1, 2, 4, 2, 16)
    torch.library.opcheck(triton_rope3d.rope3d_op, (x, cos, sin),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    assert triton_rope3d.check(x, cos, sin) is None
    assert "fp32" in triton_rope3d.check(x, cos.double(), sin.double())
