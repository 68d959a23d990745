"""3D RoPE (kernels/triton_rope3d.py) under the interpreter on the strided q/k views."""

from __future__ import annotations

import pytest
import torch

from dit_video.kernels import triton_rope3d
from dit_video.kernels.reference import rope3d_ref
from dit_video.models.embeddings import rope3d_tables

try:
    from test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401 - autouse fixture
except ImportError:
    from .test_triton_common import DTYPES, compare, poison_outputs  # noqa: F401


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grid_hd", [((3, 2, 3), 2, 40), ((1, 1, 1), 1, 16), ((2, 3, 5), 3, 24)])
def test_rope3d_on_fused_qkv_views(dtype, grid_hd):
    (t, hh, ww), h, d = grid_hd
    cos, sin = rope3d_tables((t, hh, ww), d)
    g = torch.Generator().manual_seed(61)
    qkv = torch.randn(2, t, hh * ww, 3, h, d, generator=g).to(dtype)

    def build(leaves):
        return leaves[0][:, :, :, 1], cos, sin  # the k view: strided, offset into the fused tensor

    compare(triton_rope3d.rope3d, rope3d_ref, [qkv], build=build)


def test_rope3d_opcheck_and_check():
    cos, sin = rope3d_tables((2, 2, 2), 16)
    x = torch.randn(1, 2, 4, 2, 16)
    torch.library.opcheck(triton_rope3d.rope3d_op, (x, cos, sin),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    assert triton_rope3d.check(x, cos, sin) is None
    assert "fp32" in triton_rope3d.check(x, cos.double(), sin.double())
