// Fused gated residual + adaLN on CUDA: r = x + gate * y; out = LayerNorm(r) * (1 + scale) + shift.
//
// Forward: one warp per token row, 16-byte loads, the row kept in registers (CH chunks of 8
// elements per lane, D <= 256 CH), exact two-pass mean/variance with warp shuffles; writes r (rounded
// to T, and LayerNorm is taken of that rounded r so backward can recompute it), out, mean, rstd.
// Backward: a CTA of 4 warps owns a run of rows of one (b, m) modulation group; per row it
// recomputes hn from r, mean, rstd, writes dx = dr and dy = gate * dr, and accumulates dgate,
// dshift, dscale in per-warp shared-memory slices; the CTA then adds its sums to an fp32 [B, M, 3, D]
// buffer with one atomicAdd per element.
//
// Compiled for sm_80 / sm_90a in CI (csrc/ci_build.sh); NOT launched on this project's machines
// (no GPU): correctness of these kernels is unverified until run on a GPU.
#include <cmath>

#include "vec8.cuh"

namespace dit_video {
namespace {

using cuda::bf16;

constexpr int kWarps = 4;
constexpr int kRowsPerCta = 32;  // backward

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

template <typename T, int CH>
__global__ void __launch_bounds__(32 * kWarps) adaln_fwd_kernel(const AdaLNParams p) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.B * p.M * p.N) return;  // whole warp
  const int64_t g = row / p.N, n = row % p.N, b = g / p.M, m = g % p.M;
  const T* x = static_cast<const T*>(p.x) + b * p.x_s[0] + m * p.x_s[1] + n * p.x_s[2];
  const bool res = p.y != nullptr;
  const T* y = res ? static_cast<const T*>(p.y) + b * p.y_s[0] + m * p.y_s[1] + n * p.y_s[2] : nullptr;
  const T* gate = res ? static_cast<const T*>(p.gate) + g * p.D : nullptr;
  const T* shift = static_cast<const T*>(p.shift) + g * p.D;
  const T* scale = static_cast<const T*>(p.scale) + g * p.D;

  float r[CH][8];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int64_t d = (lane + 32 * k) * 8;
    if (d < p.D) {
      cuda::load8(x + d, r[k]);
      if (res) {
        float yf[8], gf[8];
        cuda::load8(y + d, yf);
        cuda::load8(gate + d, gf);
#pragma unroll
        for (int e = 0; e < 8; ++e) r[k][e] = cuda::round_to(fmaf(gf[e], yf[e], r[k][e]), x);
        cuda::store8(static_cast<T*>(p.r) + row * p.D + d, r[k]);
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += r[k][e];
    }
  }
  const float mean = warp_sum(sum) / p.D;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    if ((lane + 32 * k) * 8 < p.D) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sq = fmaf(r[k][e] - mean, r[k][e] - mean, sq);
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / p.D + p.eps);
#pragma unroll
  for (int k = 0; k < CH; ++k) {
    const int64_t d = (lane + 32 * k) * 8;
    if (d < p.D) {
      float sh[8], sc[8];
      cuda::load8(shift + d, sh);
      cuda::load8(scale + d, sc);
#pragma unroll
      for (int e = 0; e < 8; ++e) r[k][e] = fmaf((r[k][e] - mean) * rstd, 1.f + sc[e], sh[e]);
      cuda::store8(static_cast<T*>(p.out) + row * p.D + d, r[k]);
    }
  }
  if (lane == 0) {
    p.mean[row] = mean;
    p.rstd[row] = rstd;
  }
}

template <typename T>
__global__ void __launch_bounds__(32 * kWarps) adaln_bwd_kernel(const AdaLNParams p, int64_t ctas_per_group) {
  extern __shared__ __align__(16) float acc[];  // [kWarps][3][D]: dgate, dshift, dscale
  const int64_t g = blockIdx.x / ctas_per_group, n0 = (blockIdx.x % ctas_per_group) * kRowsPerCta;
  const int64_t n1 = min(p.N, n0 + kRowsPerCta), b = g / p.M, m = g % p.M, D = p.D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t i = threadIdx.x; i < kWarps * 3 * D; i += blockDim.x) acc[i] = 0.f;
  __syncthreads();
  float* a_gate = acc + warp * 3 * D;
  float* a_shift = a_gate + D;
  float* a_scale = a_shift + D;
  const bool res = p.y != nullptr;
  const T* gate = res ? static_cast<const T*>(p.gate) + g * D : nullptr;
  const T* scale = static_cast<const T*>(p.scale) + g * D;

  for (int64_t n = n0 + warp; n < n1; n += kWarps) {
    const int64_t row = g * p.N + n;
    const float mean = p.mean[row], rstd = p.rstd[row];
    const T* r = static_cast<const T*>(p.x) + b * p.x_s[0] + m * p.x_s[1] + n * p.x_s[2];
    const T* go = static_cast<const T*>(p.grad_out) + row * D;
    float s1 = 0.f, s2 = 0.f;
    for (int64_t d = lane * 8; d < D; d += 32 * 8) {  // pass 1: row sums, dshift, dscale
      float rf[8], of[8], sc[8];
      cuda::load8(r + d, rf);
      cuda::load8(go + d, of);
      cuda::load8(scale + d, sc);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float hn = (rf[e] - mean) * rstd, dh = of[e] * (1.f + sc[e]);
        s1 += dh;
        s2 = fmaf(dh, hn, s2);
        a_shift[d + e] += of[e];
        a_scale[d + e] = fmaf(of[e], hn, a_scale[d + e]);
      }
    }
    const float m1 = warp_sum(s1) / D, m2 = warp_sum(s2) / D;
    for (int64_t d = lane * 8; d < D; d += 32 * 8) {  // pass 2 (row re-read from L1): dx, dy, dgate
      float rf[8], of[8], sc[8], dr[8];
      cuda::load8(r + d, rf);
      cuda::load8(go + d, of);
      cuda::load8(scale + d, sc);
      float gr[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (p.grad_r) cuda::load8(static_cast<const T*>(p.grad_r) + row * D + d, gr);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float hn = (rf[e] - mean) * rstd, dh = of[e] * (1.f + sc[e]);
        dr[e] = fmaf(dh - m1 - hn * m2, rstd, gr[e]);
      }
      cuda::store8(static_cast<T*>(p.dx) + row * D + d, dr);
      if (res) {
        float yf[8], gf[8];
        cuda::load8(static_cast<const T*>(p.y) + b * p.y_s[0] + m * p.y_s[1] + n * p.y_s[2] + d, yf);
        cuda::load8(gate + d, gf);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          a_gate[d + e] = fmaf(dr[e], yf[e], a_gate[d + e]);
          yf[e] = gf[e] * dr[e];
        }
        cuda::store8(static_cast<T*>(p.dy) + row * D + d, yf);
      }
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < 3 * D; i += blockDim.x) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += acc[w * 3 * D + i];
    atomicAdd(p.dmod + g * 3 * D + i, s);
  }
}

template <typename T>
const char* fwd(const AdaLNParams& p, cudaStream_t stream) {
  const int64_t rows = p.B * p.M * p.N;
  const dim3 grid(unsigned((rows + kWarps - 1) / kWarps)), block(32 * kWarps);
  const int64_t chunks = (p.D / 8 + 31) / 32;
  if (chunks <= 1)
    adaln_fwd_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  else if (chunks <= 2)
    adaln_fwd_kernel<T, 2><<<grid, block, 0, stream>>>(p);
  else if (chunks <= 4)
    adaln_fwd_kernel<T, 4><<<grid, block, 0, stream>>>(p);
  else
    adaln_fwd_kernel<T, 8><<<grid, block, 0, stream>>>(p);
  return cuda::last_error();
}

template <typename T>
const char* bwd(const AdaLNParams& p, cudaStream_t stream) {
  const int64_t per_group = (p.N + kRowsPerCta - 1) / kRowsPerCta;
  const size_t smem = size_t(kWarps) * 3 * p.D * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(adaln_bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return cudaGetErrorString(e);
  }
  adaln_bwd_kernel<T><<<dim3(unsigned(p.B * p.M * per_group)), dim3(32 * kWarps), smem, stream>>>(p, per_group);
  return cuda::last_error();
}

bool supported(const AdaLNParams& p) { return p.D % 8 == 0 && p.D <= 2048; }

}  // namespace

const char* adaln_fwd_cuda(const AdaLNParams& p, CUstream_st* stream) {
  if (!supported(p)) return "adaLN CUDA kernel: needs width <= 2048, a multiple of 8";
  return p.dtype == DType::BFloat16 ? fwd<bf16>(p, stream) : fwd<float>(p, stream);
}

const char* adaln_bwd_cuda(const AdaLNParams& p, CUstream_st* stream) {
  if (!supported(p)) return "adaLN CUDA kernel: needs width <= 2048, a multiple of 8";
  return p.dtype == DType::BFloat16 ? bwd<bf16>(p, stream) : bwd<float>(p, stream);
}

}  // namespace dit_video
