"""The ``cpu`` and ``cuda`` backends: the compiled C++/CUDA extension ``dit_video._C`` (csrc/).

Ops (``torch.ops.dit_video.csrc_*``, schemas in csrc/bindings.cpp; the prefix keeps them apart from the
Triton backend's custom ops of the same namespace):

* ``csrc_temporal_attention`` — short-sequence attention read in place from strided ``[..., L, H, D]``
  views (the temporal view ``[B, S, T, H, D]`` of a fused QKV projection); o is written in the
  caller's token layout; saves o and the log-sum-exp for backward.
* ``csrc_gated_residual_adaln`` / ``csrc_adaln_modulate`` — ``r = x + gate * y`` and LayerNorm(r) *
  (1 + scale) + shift in one pass; saves mean and rstd.
* ``csrc_gelu_tanh`` (CPU only) — GELU's tanh approximation in fp32 registers over a contiguous tensor;
  saves its input. ATen's bf16 tanh-GELU took 2.4x (forward) and 1.6x (backward) its time on a Zen 4 EPYC.

Loading (lazily, on the first dispatch to ``cpu``/``cuda``): a prebuilt ``dit_video._C``
(``DIT_VIDEO_BUILD_EXT=1 pip install -e . --no-build-isolation``), else the sources are JIT-built
once with ``torch.utils.cpp_extension.load`` into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), with one log line: the CPU sources, plus the CUDA ones when a GPU,
a CUDA torch and nvcc are present. ``dit-video build-ext`` does this ahead of first use. No C++
compiler: one warning, and this module fails to import, so dispatch falls back to the next backend
with that reason. The JIT build reads csrc/ from a source checkout (editable install).

The CUDA kernels are compiled here for sm_80 / sm_90a (csrc/ci_build.sh) but this project's
machines have no GPU: they have never been launched. The ``cuda`` backend registers only when the
loaded library has CUDA kernels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from . import autotune
from .dispatch import register
from .layout import empty_in_layout_of

log = logging.getLogger("dit_video.kernels")

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CPU_SOURCES = ("bindings.cpp", "cpu/temporal_attention.cpp", "cpu/attention_bf16.cpp", "cpu/adaln.cpp", "cpu/gelu.cpp")
CUDA_SOURCES = ("cuda/temporal_attention.cu", "cuda/adaln.cu")

# Shapes the kernels serve. CPU: one sequence (all its heads) per task, tiles in an fp32 scratch,
# O(Lq Lk) scores per head. Measured fwd+bwd vs the torch reference (this machine, same process):
# Lk 256: 0.48x fp32 / 0.83x bf16; Lk 512: 0.84x / 0.67x; Lk 1024: 1.39x / 1.41x (slower) -> auto
# uses the kernel up to 256 keys and torch's flash SDPA beyond.
CPU_MAX_LK = 256
CPU_MAX_HEAD_DIM = 256
CUDA_MAX_SEQ = 64  # = kCudaMaxSeq in csrc/dit_ops.h
CUDA_MAX_HEAD_DIM = 128  # = kCudaMaxHeadDim
CUDA_MAX_WIDTH = 2048  # adaLN row width: one warp per row, <= 8 16-byte chunks per lane
DTYPES = (torch.float32, torch.bfloat16)


def cpu_capability_flags(capability: str | None = None) -> list[str]:
    """Compiler flags selecting ATen's Vectorized<T> implementation (same list in setup.py)."""
    cap = capability or torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if cap == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return ["-DCPU_CAPABILITY=DEFAULT"]


def _cuda_home() -> str | None:
    """A CUDA toolkit with nvcc, for JIT-building the CUDA kernels (None: CPU sources only)."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return home
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def want_cuda() -> bool:
    """JIT-build the CUDA kernels too: a CUDA build of torch, a visible GPU and nvcc."""
    return bool(torch.version.cuda) and torch.cuda.is_available() and _cuda_home() is not None


def jit_build(cuda: bool | None = None, verbose: bool = False) -> str:
    """Build (or reuse the cached build of) the extension and load it; returns the library path."""
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} not found): cannot build the dit_video C++ extension")
    cuda = want_cuda() if cuda is None else cuda
    sources = [str(CSRC / s) for s in CPU_SOURCES]
    # torch >= 2.10 headers need (and pass) -std=c++20. -fopenmp: at::parallel_for is an inline OpenMP loop,
    # which without the flag runs on one thread (it did until 2026-12-02); links torch's own libgomp.so.1.
    cflags = ["-O3", "-fopenmp", *cpu_capability_flags()]
    kw: dict = {"extra_ldflags": ["-fopenmp"]}
    name = "dit_video_C_cpu"
    if cuda:
        home = _cuda_home()
        if home is None:
            raise RuntimeError("no nvcc found (set CUDA_HOME): cannot build the CUDA kernels")
        os.environ["CUDA_HOME"] = home
        cpp_extension.CUDA_HOME = home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0 9.0a")
        sources += [str(CSRC / s) for s in CUDA_SOURCES]
        cflags.append("-DDIT_VIDEO_WITH_CUDA")
        kw["extra_cuda_cflags"] = ["-O3", "--use_fast_math"]
        try:  # headers of torch's nvidia-* wheels (cusparse.h, ...), which a bare toolkit may lack
            import nvidia

            kw["extra_include_paths"] = [str(p) for r in nvidia.__path__ for p in Path(r).glob("cu*/include")]
        except ImportError:
            pass
        name = "dit_video_C_cuda"
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    build_dir = root / f"{name}_torch{torch.__version__.replace('+', '_')}"
    build_dir.mkdir(parents=True, exist_ok=True)
    so = build_dir / f"{name}.so"
    log.warning("dit_video.kernels: %s the C++ extension %s (%s)", "loading or updating" if so.exists() else
                "JIT-building (once, ~1-2 min)", name, build_dir)
    t0 = time.perf_counter()
    cpp_extension.load(name=name, sources=sources, extra_cflags=cflags, build_directory=str(build_dir),
                       is_python_module=False, verbose=verbose, **kw)
    log.info("dit_video.kernels: %s ready in %.1fs", name, time.perf_counter() - t0)
    return str(so)


def _load_library() -> str:
    """Make torch.ops.dit_video.csrc_* available: prebuilt dit_video._C, else JIT build. Returns its origin."""
    if _op_exists():
        return "already loaded"
    try:
        import dit_video._C as ext  # noqa: F401  (ops register when the library loads)

        return f"prebuilt {ext.__file__}"
    except ImportError as e:
        prebuilt_error = e
    try:
        return f"JIT {jit_build()}"
    except Exception as e:
        warnings.warn(f"dit_video: the C++ extension is unavailable ({str(e).splitlines()[0]}); the cpu/cuda "
                      f"kernel backends are off (no prebuilt dit_video._C: {prebuilt_error})", RuntimeWarning,
                      stacklevel=2)
        raise


def _op_exists() -> bool:
    try:
        torch.ops.dit_video.csrc_temporal_attention.default  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


def _build_id(path: str) -> str:
    """Identity of the loaded library file (name, size, mtime): autotune decisions are kept per build."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return f"{os.path.basename(path)} {st.st_size} {st.st_mtime_ns}"
    return ORIGIN


ORIGIN = _load_library()
LIBRARY = ORIGIN.split(" ", 1)[-1]  # the loaded library file ("already loaded": unknown)
autotune.note_build("csrc", _build_id(LIBRARY))
OPS = torch.ops.dit_video
HAS_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("dit_video::csrc_temporal_attention",
                                                                   "CUDA")


# ----------------------------------------------------------------------------------- fake impls
@torch.library.register_fake("dit_video::csrc_temporal_attention")
def _attention_fake(q, k, v, key_padding_mask, scale):
    lse = q.new_empty(tuple(q.shape[:-3]) + (q.shape[-2], q.shape[-3]), dtype=torch.float32)
    return empty_in_layout_of(q), lse


@torch.library.register_fake("dit_video::csrc_temporal_attention_backward")
def _attention_bwd_fake(grad_o, q, k, v, o, lse, key_padding_mask, scale):
    return empty_in_layout_of(q), empty_in_layout_of(k), empty_in_layout_of(v)


def _stats_fake(x):
    return x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("dit_video::csrc_gated_residual_adaln")
def _gra_fake(x, y, gate, shift, scale, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format), \
        torch.empty_like(x, memory_format=torch.contiguous_format), _stats_fake(x), _stats_fake(x)


@torch.library.register_fake("dit_video::csrc_gated_residual_adaln_backward")
def _gra_bwd_fake(grad_r, grad_out, r, y, gate, scale, mean, rstd):
    c = torch.contiguous_format
    return (torch.empty_like(r, memory_format=c), torch.empty_like(r, memory_format=c), gate.new_empty(gate.shape),
            scale.new_empty(scale.shape), scale.new_empty(scale.shape))


@torch.library.register_fake("dit_video::csrc_adaln_modulate")
def _mod_fake(x, shift, scale, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format), _stats_fake(x), _stats_fake(x)


@torch.library.register_fake("dit_video::csrc_adaln_modulate_backward")
def _mod_bwd_fake(grad_out, x, scale, mean, rstd):
    return torch.empty_like(x, memory_format=torch.contiguous_format), scale.new_empty(scale.shape), \
        scale.new_empty(scale.shape)


@torch.library.register_fake("dit_video::csrc_gelu_tanh")
def _gelu_fake(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("dit_video::csrc_gelu_tanh_backward")
def _gelu_bwd_fake(grad, x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------- autograd
def _attention_setup(ctx, inputs, output):
    q, k, v, mask, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, mask)  # the minimum: inputs + o + logsumexp
    ctx.scale = scale


def _attention_backward(ctx, grad_o, grad_lse):
    q, k, v, o, lse, mask = ctx.saved_tensors
    dq, dk, dv = OPS.csrc_temporal_attention_backward(grad_o, q, k, v, o, lse, mask, ctx.scale)
    return dq, dk, dv, None, None


torch.library.register_autograd("dit_video::csrc_temporal_attention", _attention_backward,
                                setup_context=_attention_setup)


def _gra_setup(ctx, inputs, output):
    x, y, gate, shift, scale, eps = inputs
    r, out, mean, rstd = output
    ctx.save_for_backward(r, y, gate, scale, mean, rstd)


def _gra_backward(ctx, grad_r, grad_out, grad_mean, grad_rstd):
    r, y, gate, scale, mean, rstd = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(r)
    dx, dy, dgate, dshift, dscale = OPS.csrc_gated_residual_adaln_backward(grad_r, grad_out, r, y, gate, scale,
                                                                           mean, rstd)
    return dx, dy, dgate, dshift, dscale, None


torch.library.register_autograd("dit_video::csrc_gated_residual_adaln", _gra_backward, setup_context=_gra_setup)


def _mod_setup(ctx, inputs, output):
    x, shift, scale, eps = inputs
    out, mean, rstd = output
    ctx.save_for_backward(x, scale, mean, rstd)


def _mod_backward(ctx, grad_out, grad_mean, grad_rstd):
    x, scale, mean, rstd = ctx.saved_tensors
    dx, dshift, dscale = OPS.csrc_adaln_modulate_backward(grad_out, x, scale, mean, rstd)
    return dx, dshift, dscale, None


torch.library.register_autograd("dit_video::csrc_adaln_modulate", _mod_backward, setup_context=_mod_setup)


def _gelu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _gelu_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return OPS.csrc_gelu_tanh_backward(grad, x)


torch.library.register_autograd("dit_video::csrc_gelu_tanh", _gelu_backward, setup_context=_gelu_setup)


# --------------------------------------------------------------------------- backend functions
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return OPS.csrc_temporal_attention(q, k, v, key_padding_mask, scale)[0]


def gated_residual_adaln(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor,
                         scale: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    r, out, _, _ = OPS.csrc_gated_residual_adaln(x, y, gate, shift, scale, float(eps))
    return r, out


def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return OPS.csrc_adaln_modulate(x, shift, scale, float(eps))[0]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return OPS.csrc_gelu_tanh(x)


def _gelu_tanh_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return OPS.csrc_gelu_tanh_backward(grad, x)


gelu_tanh.backward = _gelu_tanh_backward  # see reference.gelu_tanh_ref


# ------------------------------------------------------------------------------------- checks
def _common(device: str, tensors: list[torch.Tensor]) -> str | None:
    t0 = tensors[0]
    if any(t.device.type != device for t in tensors):
        return f"needs {device} tensors"
    if t0.dtype not in DTYPES or any(t.dtype != t0.dtype for t in tensors):
        return f"dtype {t0.dtype} (float32/bfloat16, all alike)"
    return None


def _attention_check(device: str, max_lk: int, max_d: int):
    def check(q, k, v, key_padding_mask=None, scale=None) -> str | None:
        why = _common(device, [q, k, v])
        if why:
            return why
        if q.dim() - 3 > 3:
            return f"more than 3 batch dims ({q.dim() - 3})"
        if k.shape != v.shape or q.dim() != k.dim() or \
                any(kb not in (qb, 1) for qb, kb in zip(q.shape[:-3], k.shape[:-3])):
            return "q's batch dims must match k/v's or be broadcast from size 1; k and v one shape"
        lq, lk, d = q.shape[-3], k.shape[-3], q.shape[-1]
        if lk > max_lk:
            return f"Lk {lk} > {max_lk} (short-sequence kernel)"
        if d > max_d:
            return f"head_dim {d} > {max_d}"
        if key_padding_mask is not None and key_padding_mask.device != q.device:
            return "key_padding_mask on another device"
        if device == "cuda":
            if lq > max_lk:
                return f"Lq {lq} > {max_lk}"
            if d % 8:
                return f"head_dim {d} not a multiple of 8 (16-byte loads)"
            vec = 16 // q.element_size()
            for t in (q, k, v):
                if t.stride(-1) != 1 or any(s % vec for s in t.stride()[:-1]) or t.data_ptr() % 16:
                    return "views not 16-byte aligned"
            need = _cuda_attention_smem(lq, lk, d, q.element_size())
            have = torch.cuda.get_device_properties(q.device).shared_memory_per_block_optin
            if need > have:
                return f"needs {need} B of shared memory per block, the device has {have}"
        return None

    return check


def _cuda_attention_smem(lq: int, lk: int, d: int, elt: int) -> int:
    """Dynamic shared memory of the CUDA backward kernel (the larger one; csrc/cuda/temporal_attention.cu)."""
    dp = 8 * (4 if d <= 32 else 8 if d <= 64 else 16)
    floats = (2 * lq * lk + 2 * lq + 3) // 4 * 4
    return floats * 4 + 2 * (lq + lk) * dp * elt + lk


def _adaln_check(device: str, max_width: int | None):
    def check(x, *mods_and_eps, **kwargs) -> str | None:
        tensors = [x] + [t for t in mods_and_eps if isinstance(t, torch.Tensor)]
        why = _common(device, tensors)
        if why:
            return why
        d = x.shape[-1]
        if max_width is not None:
            if d > max_width:
                return f"width {d} > {max_width}"
            if d % 8:
                return f"width {d} not a multiple of 8 (16-byte loads)"
            vec = 16 // x.element_size()
            if any(t.stride(-1) != 1 or any(s % vec for s in t.stride()[:-1]) or t.data_ptr() % 16
                   for t in tensors[:2]):
                return "rows not 16-byte aligned"
        return None

    return check


def _gelu_check(x) -> str | None:
    why = _common("cpu", [x])
    if why:
        return why
    if not x.is_contiguous():
        return "needs a contiguous tensor (one pass over memory)"
    return None


register("attention", "cpu", attention, _attention_check("cpu", CPU_MAX_LK, CPU_MAX_HEAD_DIM), priority=10)
register("gated_residual_adaln", "cpu", gated_residual_adaln, _adaln_check("cpu", None), priority=10)
register("adaln_modulate", "cpu", adaln_modulate, _adaln_check("cpu", None), priority=10)
register("gelu_tanh", "cpu", gelu_tanh, _gelu_check, priority=10)
if HAS_CUDA_KERNELS:
    register("attention", "cuda", attention, _attention_check("cuda", CUDA_MAX_SEQ, CUDA_MAX_HEAD_DIM), priority=10)
    register("gated_residual_adaln", "cuda", gated_residual_adaln, _adaln_check("cuda", CUDA_MAX_WIDTH), priority=10)
    register("adaln_modulate", "cuda", adaln_modulate, _adaln_check("cuda", CUDA_MAX_WIDTH), priority=10)
