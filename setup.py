"""Packaging: the `dit_video` package (its kernels live in dit_video/kernels/) and its optional extension.

The optional compiled extension `dit_video._C` (csrc/) is built only when asked for:

    DIT_VIDEO_BUILD_EXT=1 pip install -e . --no-build-isolation

- a CUDAExtension (CPU + CUDA kernels) when torch is a CUDA build and nvcc is found
  (CUDA_HOME, else nvcc on PATH, else /usr/local/cuda); archs from TORCH_CUDA_ARCH_LIST, default
  "8.0 9.0a" (sm_80, sm_90a). No GPU is needed to build.
- a CppExtension (CPU kernels) otherwise.

The CPU kernels are compiled for the build machine's vector ISA (torch's CPU capability: AVX512,
AVX2 or DEFAULT; override with DIT_VIDEO_CPU_CAPABILITY). DIT_VIDEO_PTXAS_VERBOSE=1 prints ptxas's
register/spill report per kernel (csrc/ci_build.sh). Without a prebuilt module, the first use of
the cpu backend JIT-builds the CPU sources instead (dit_video/kernels/csrc_ops.py, `dit-video build-ext`).
"""
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

packages = find_packages(include=["dit_video", "dit_video.*"])

CPU_SOURCES = ["csrc/bindings.cpp", "csrc/cpu/temporal_attention.cpp", "csrc/cpu/attention_bf16.cpp",
               "csrc/cpu/adaln.cpp", "csrc/cpu/gelu.cpp"]
CUDA_SOURCES = ["csrc/cuda/temporal_attention.cu", "csrc/cuda/adaln.cu"]


def cpu_capability_flags(cap: str) -> list[str]:
    """Flags selecting ATen's Vectorized<T> implementation (same list in dit_video/kernels/csrc_ops.py)."""
    if cap.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if cap == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return ["-DCPU_CAPABILITY=DEFAULT"]


def find_nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    return "/usr/local/cuda" if Path("/usr/local/cuda/bin/nvcc").exists() else None


def nvidia_wheel_dirs() -> tuple[list[str], list[str]]:
    """Headers/libs of torch's nvidia-* wheels (cusparse.h etc.), which a bare toolkit may lack."""
    try:
        import nvidia
    except ImportError:
        return [], []
    inc, lib = [], []
    for root in map(Path, nvidia.__path__):
        for sub in sorted(root.glob("cu*")) + [root]:
            if (sub / "include").is_dir():
                inc.append(str(sub / "include"))
            if (sub / "lib").is_dir():
                lib.append(str(sub / "lib"))
    return inc, lib


def extension_kwargs() -> dict:
    if os.environ.get("DIT_VIDEO_BUILD_EXT", "0") in ("", "0"):
        return {}
    import torch

    cuda_home = find_nvcc() if torch.version.cuda else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read when cpp_extension is imported
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0 9.0a")
    from torch.utils import cpp_extension

    cap = os.environ.get("DIT_VIDEO_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
    # -fopenmp: at::parallel_for is an inline OpenMP loop; without the flag it runs on one thread.
    # The module links the libgomp.so.1 that torch ships and has already loaded (one thread pool).
    cxx = ["-O3", "-fopenmp", *cpu_capability_flags(cap)]
    if cuda_home:
        inc, lib = nvidia_wheel_dirs()
        nvcc = ["-O3", "--use_fast_math"]
        if os.environ.get("DIT_VIDEO_PTXAS_VERBOSE") == "1":
            nvcc.append("-Xptxas=-v")
        ext = cpp_extension.CUDAExtension(
            "dit_video._C", CPU_SOURCES + CUDA_SOURCES, include_dirs=inc, library_dirs=lib,
            define_macros=[("DIT_VIDEO_WITH_CUDA", None)], extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=["-fopenmp"])
        print(f"dit_video._C: CUDAExtension (CUDA_HOME={cuda_home}, archs {os.environ['TORCH_CUDA_ARCH_LIST']}, "
              f"CPU {cap})")
    else:
        ext = cpp_extension.CppExtension("dit_video._C", CPU_SOURCES, extra_compile_args={"cxx": cxx},
                                         extra_link_args=["-fopenmp"])
        print(f"dit_video._C: CppExtension (CPU {cap}; torch CUDA build: {bool(torch.version.cuda)}, "
              "nvcc not found or CPU-only torch)")
    return {"ext_modules": [ext], "cmdclass": {"build_ext": cpp_extension.BuildExtension}}


setup(packages=packages, **extension_kwargs())
