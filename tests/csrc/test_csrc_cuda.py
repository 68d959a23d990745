"""The CUDA kernels against the torch reference on a GPU (outputs and gradients, fp32 and bf16, the 2x
rule, the temporal views of a fused QKV projection, masks, odd widths). Skipped without a GPU and a
CUDA build of dit_video._C: this project's machines have none, so these have not run here."""

import pytest
import torch
from csrc_numerics import assert_2x, run_with_grads

from dit_video.kernels import resolve
from dit_video.kernels.reference import attention_ref, gated_residual_adaln_ref

DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def cuda_ops(csrc):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not csrc.HAS_CUDA_KERNELS:
        pytest.skip("dit_video._C was built without CUDA kernels")
    return csrc


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 16, 5, 3, 64), (1, 17, 3, 2, 40), (1, 64, 2, 2, 128), (2, 1, 4, 1, 8),
                                   (1, 33, 2, 2, 24)])
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_temporal_attention(cuda_ops, dtype, shape, masked):
    b, t, s, h, d = shape
    qkv = torch.randn(b, t, s, 3, h, d, device="cuda")
    mask = None
    if masked:
        mask = torch.rand(b, s, t, device="cuda") > 0.3
        mask[0, 0] = False

    def views(x):
        return tuple(v.transpose(1, 2) for v in x.unbind(3))

    def ours(x):
        q, k, v = views(x)
        assert resolve("attention", "cuda", q, k, v, key_padding_mask=mask).backend == "cuda"
        return cuda_ops.attention(q, k, v, key_padding_mask=mask)

    def ref(x):
        return attention_ref(*views(x), key_padding_mask=mask)

    g = torch.randn((b, s, t, h, d), dtype=torch.float64, device="cuda")
    (o,), (gq,) = run_with_grads(ours, [qkv.to(dtype)], [g])
    (o_t,), (gq_t,) = run_with_grads(ref, [qkv.to(dtype)], [g])
    (o64,), (gq64,) = run_with_grads(ref, [qkv.double()], [g])
    assert_2x("o", o, o_t, o64, dtype)
    assert_2x("grad", gq, gq_t, gq64, dtype)
    if masked:
        assert (o[0, 0] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ms", [((2, 3, 5, 48), (2, 48)), ((2, 4, 7, 384), (2, 4, 384)),
                                   ((1, 2, 33, 1152), (1, 1152)), ((1, 2, 3, 2048), (1, 2, 2048))])
def test_cuda_gated_residual_adaln(cuda_ops, dtype, xs, ms):
    x = torch.randn(xs, device="cuda")
    y = torch.randn((xs[0], xs[2], xs[1], xs[3]), device="cuda").transpose(1, 2)  # non-contiguous
    mods = [torch.randn(ms, device="cuda") * 0.5 for _ in range(3)]
    gs = [torch.randn(xs, dtype=torch.float64, device="cuda") for _ in range(2)]

    def cast(t):
        return torch.empty_strided(t.shape, t.stride(), dtype=dtype, device="cuda").copy_(t)

    ins = [x, y, *mods]
    outs, grads = run_with_grads(cuda_ops.gated_residual_adaln, [cast(t) for t in ins], gs)
    outs_t, grads_t = run_with_grads(gated_residual_adaln_ref, [cast(t) for t in ins], gs)
    outs64, grads64 = run_with_grads(gated_residual_adaln_ref, [t.double() for t in ins], gs)
    for name, a, b, c in zip(["r", "out", "dx", "dy", "dgate", "dshift", "dscale"], outs + grads,
                             outs_t + grads_t, outs64 + grads64):
        assert_2x(name, a, b, c, dtype)
