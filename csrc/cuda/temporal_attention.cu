// Short-sequence attention (L <= 64, D <= 128, D % 8 == 0) read in place from strided
// [batch..., L, H, D] views: the temporal view [B, S, T, H, D] of a fused QKV projection.
//
// One CTA (4 warps) per (sequence, head). K and V (and in backward Q, dO) are staged in shared
// memory with 16-byte loads; each query (or key) row is owned by a group of G lanes, each lane a
// 16-byte chunk of 8 elements (G = 4, 8, 16 for D <= 32, 64, 128), dot products reduced with
// G-lane shuffles. Forward: online softmax in fp32 (exp2 domain), writes o in the caller's layout
// and the natural-log logsumexp. Backward (flash-attention's recurrences): phase 1 per query row
// recomputes P = exp(s - lse), dS = P (dP - delta), accumulates dQ and parks P, dS in shared
// memory; phase 2 per key row accumulates dK, dV. Fully masked rows: o = 0, lse = +inf, no grad.
//
// Compiled for sm_80 / sm_90a in CI (csrc/ci_build.sh); NOT launched on this project's machines
// (no GPU): correctness of these kernels is unverified until run on a GPU.
#include <cmath>

#include "vec8.cuh"

namespace dit_video {
namespace {

using cuda::bf16;

constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct BatchIdx {
  int64_t i[kMaxBatchDims];
};

__device__ __forceinline__ BatchIdx unravel(int64_t n, const AttnParams& p) {
  BatchIdx b;
#pragma unroll
  for (int d = kMaxBatchDims - 1; d >= 0; --d) {
    b.i[d] = n % p.batch[d];
    n /= p.batch[d];
  }
  return b;
}

template <typename T>
__device__ __forceinline__ T* seq_ptr(const SeqView& v, const BatchIdx& b, int64_t h) {
  int64_t off = h * v.hs;
#pragma unroll
  for (int d = 0; d < kMaxBatchDims; ++d) off += b.i[d] * v.bs[d];
  return static_cast<T*>(v.ptr) + off;
}

// Stage rows [0, L) of a strided sequence into shared [L][8 G] (zero-padded past D).
template <typename T, int G>
__device__ __forceinline__ void stage(T* dst, const T* src, int64_t ls, int L, int D) {
  for (int idx = threadIdx.x; idx < L * G; idx += blockDim.x) {
    const int j = idx / G, c = idx % G;
    if (c * 8 < D)
      cuda::copy8(dst + j * 8 * G + c * 8, src + j * ls + c * 8);
    else
      cuda::zero8(dst + j * 8 * G + c * 8);
  }
}

__device__ __forceinline__ bool load_keep(const AttnParams& p, const BatchIdx& b, uint8_t* keep) {
  for (int j = threadIdx.x; j < p.lk; j += blockDim.x) {
    uint8_t m = 1;
    if (p.mask) {
      int64_t off = j * p.mask_ls;
#pragma unroll
      for (int d = 0; d < kMaxBatchDims; ++d) off += b.i[d] * p.mask_bs[d];
      m = p.mask[off] ? 1 : 0;
    }
    keep[j] = m;
  }
  return true;
}

template <typename T, int G>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(const AttnParams p) {
  constexpr int DP = 8 * G;
  extern __shared__ __align__(16) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + p.lk * DP;
  uint8_t* keep = reinterpret_cast<uint8_t*>(vs + p.lk * DP);

  const int64_t t = blockIdx.x, n = t / p.heads, h = t % p.heads;
  const BatchIdx b = unravel(n, p);
  stage<T, G>(ks, seq_ptr<const T>(p.k, b, h), p.k.ls, p.lk, p.dim);
  stage<T, G>(vs, seq_ptr<const T>(p.v, b, h), p.v.ls, p.lk, p.dim);
  load_keep(p, b, keep);
  __syncthreads();

  const T* q = seq_ptr<const T>(p.q, b, h);
  T* o = seq_ptr<T>(p.o, b, h);
  const int c = threadIdx.x % G, group = threadIdx.x / G;
  const bool lane_on = c * 8 < p.dim;
  const float qscale = p.scale * kLog2e;
  for (int i0 = 0; i0 < p.lq; i0 += kThreads / G) {  // uniform over the CTA
    const int i = i0 + group;
    const bool row_on = i < p.lq;
    float qf[8] = {0, 0, 0, 0, 0, 0, 0, 0}, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (row_on && lane_on) cuda::load8(q + i * p.q.ls + c * 8, qf);
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[e] *= qscale;
    float m = -INFINITY, l = 0.f;
    for (int j = 0; j < p.lk; ++j) {
      if (!keep[j]) continue;  // uniform: the mask is per sequence
      float kf[8], vf[8];
      cuda::load8(ks + j * DP + c * 8, kf);
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) s = fmaf(qf[e], kf[e], s);
      s = cuda::group_sum<G>(s);
      const float m_new = fmaxf(m, s), corr = exp2f(m - m_new), pj = exp2f(s - m_new);
      l = l * corr + pj;
      cuda::load8(vs + j * DP + c * 8, vf);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(pj, vf[e], acc[e] * corr);
      m = m_new;
    }
    if (row_on) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] *= inv;
      if (lane_on) cuda::store8(o + i * p.o.ls + c * 8, acc);
      if (c == 0) p.lse[t * p.lq + i] = l > 0.f ? (m + log2f(l)) * kLn2 : INFINITY;
    }
  }
}

// fp32 words before the staged tiles in backward: P, dS, delta, lse, rounded up to 16 bytes
__host__ __device__ __forceinline__ int64_t bwd_floats(const AttnParams& p) {
  return (2 * int64_t(p.lq) * p.lk + 2 * p.lq + 3) / 4 * 4;
}

template <typename T, int G>
__global__ void __launch_bounds__(kThreads, 4) attn_bwd_kernel(const AttnParams p) {
  constexpr int DP = 8 * G;
  extern __shared__ __align__(16) unsigned char smem[];
  float* P = reinterpret_cast<float*>(smem);  // [lq][lk]
  float* dS = P + p.lq * p.lk;                 // [lq][lk]
  float* delta = dS + p.lq * p.lk;             // [lq]
  float* lse2 = delta + p.lq;                  // [lq], log2 domain
  T* qs = reinterpret_cast<T*>(P + bwd_floats(p));  // 16-byte aligned
  T* ks = qs + p.lq * DP;
  T* vs = ks + p.lk * DP;
  T* dos = vs + p.lk * DP;
  uint8_t* keep = reinterpret_cast<uint8_t*>(dos + p.lq * DP);

  const int64_t t = blockIdx.x, n = t / p.heads, h = t % p.heads;
  const BatchIdx b = unravel(n, p);
  stage<T, G>(qs, seq_ptr<const T>(p.q, b, h), p.q.ls, p.lq, p.dim);
  stage<T, G>(ks, seq_ptr<const T>(p.k, b, h), p.k.ls, p.lk, p.dim);
  stage<T, G>(vs, seq_ptr<const T>(p.v, b, h), p.v.ls, p.lk, p.dim);
  stage<T, G>(dos, seq_ptr<const T>(p.dout, b, h), p.dout.ls, p.lq, p.dim);
  load_keep(p, b, keep);
  for (int i = threadIdx.x; i < p.lq; i += blockDim.x) lse2[i] = p.lse[t * p.lq + i] * kLog2e;

  const int c = threadIdx.x % G, group = threadIdx.x / G;
  const bool lane_on = c * 8 < p.dim;
  const T* o = seq_ptr<const T>(p.o, b, h);
  // delta_i = dO_i . O_i (O read straight from global)
  const T* dout = seq_ptr<const T>(p.dout, b, h);
  for (int i0 = 0; i0 < p.lq; i0 += kThreads / G) {
    const int i = i0 + group;
    float of[8] = {0, 0, 0, 0, 0, 0, 0, 0}, df[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (i < p.lq && lane_on) {
      cuda::load8(o + i * p.o.ls + c * 8, of);
      cuda::load8(dout + i * p.dout.ls + c * 8, df);
    }
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) s = fmaf(of[e], df[e], s);
    s = cuda::group_sum<G>(s);
    if (i < p.lq && c == 0) delta[i] = s;
  }
  __syncthreads();

  // phase 1: one query row per lane group -> dQ; park P and dS
  T* dq = seq_ptr<T>(p.dq, b, h);
  const float sl2 = p.scale * kLog2e;
  for (int i0 = 0; i0 < p.lq; i0 += kThreads / G) {
    const int i = i0 + group;
    const bool row_on = i < p.lq;
    const int ii = row_on ? i : 0;
    float qf[8], df[8], acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    cuda::load8(qs + ii * DP + c * 8, qf);
    cuda::load8(dos + ii * DP + c * 8, df);
    const float l2 = row_on ? lse2[ii] : INFINITY, dl = delta[ii];
    for (int j = 0; j < p.lk; ++j) {
      float kf[8], vf[8];
      cuda::load8(ks + j * DP + c * 8, kf);
      cuda::load8(vs + j * DP + c * 8, vf);
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        s = fmaf(qf[e], kf[e], s);
        dp = fmaf(df[e], vf[e], dp);
      }
      s = cuda::group_sum<G>(s);
      dp = cuda::group_sum<G>(dp);
      const float pj = keep[j] ? exp2f(s * sl2 - l2) : 0.f;  // l2 = +inf -> 0
      const float ds = pj * (dp - dl) * p.scale;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(ds, kf[e], acc[e]);
      if (row_on && c == 0) {
        P[i * p.lk + j] = pj;
        dS[i * p.lk + j] = ds;
      }
    }
    if (row_on && lane_on) cuda::store8(dq + i * p.dq.ls + c * 8, acc);
  }
  __syncthreads();

  // phase 2: one key row per lane group -> dK = dS^T Q, dV = P^T dO
  T* dk = seq_ptr<T>(p.dk, b, h);
  T* dv = seq_ptr<T>(p.dv, b, h);
  for (int j0 = 0; j0 < p.lk; j0 += kThreads / G) {
    const int j = j0 + group;
    if (j >= p.lk) break;  // no shuffles below: divergence is fine
    float ak[8] = {0, 0, 0, 0, 0, 0, 0, 0}, av[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < p.lq; ++i) {
      float qf[8], df[8];
      cuda::load8(qs + i * DP + c * 8, qf);
      cuda::load8(dos + i * DP + c * 8, df);
      const float pj = P[i * p.lk + j], ds = dS[i * p.lk + j];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        ak[e] = fmaf(ds, qf[e], ak[e]);
        av[e] = fmaf(pj, df[e], av[e]);
      }
    }
    if (lane_on) {
      cuda::store8(dk + j * p.dk.ls + c * 8, ak);
      cuda::store8(dv + j * p.dv.ls + c * 8, av);
    }
  }
}

size_t fwd_smem(const AttnParams& p, int G, size_t elt) { return 2 * size_t(p.lk) * 8 * G * elt + p.lk; }

size_t bwd_smem(const AttnParams& p, int G, size_t elt) {
  return bwd_floats(p) * 4 + 2 * size_t(p.lq + p.lk) * 8 * G * elt + p.lk;
}

template <typename Kernel>
const char* launch(Kernel kernel, const AttnParams& p, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return cudaGetErrorString(e);
  }
  kernel<<<dim3(unsigned(p.nbatch * p.heads)), dim3(kThreads), smem, stream>>>(p);
  return cuda::last_error();
}

template <bool BWD, typename T>
const char* dispatch_g(const AttnParams& p, cudaStream_t stream) {
  if (p.lq > kCudaMaxSeq || p.lk > kCudaMaxSeq || p.dim > kCudaMaxHeadDim || p.dim % 8)
    return "temporal attention CUDA kernel: needs Lq, Lk <= 64 and head_dim <= 128, a multiple of 8";
  const int G = p.dim <= 32 ? 4 : p.dim <= 64 ? 8 : 16;
  const size_t elt = sizeof(T);
  if constexpr (BWD) {
    const size_t smem = bwd_smem(p, G, elt);
    if (G == 4) return launch(attn_bwd_kernel<T, 4>, p, smem, stream);
    if (G == 8) return launch(attn_bwd_kernel<T, 8>, p, smem, stream);
    return launch(attn_bwd_kernel<T, 16>, p, smem, stream);
  } else {
    const size_t smem = fwd_smem(p, G, elt);
    if (G == 4) return launch(attn_fwd_kernel<T, 4>, p, smem, stream);
    if (G == 8) return launch(attn_fwd_kernel<T, 8>, p, smem, stream);
    return launch(attn_fwd_kernel<T, 16>, p, smem, stream);
  }
}

}  // namespace

const char* temporal_attention_fwd_cuda(const AttnParams& p, CUstream_st* stream) {
  return p.dtype == DType::BFloat16 ? dispatch_g<false, bf16>(p, stream) : dispatch_g<false, float>(p, stream);
}

const char* temporal_attention_bwd_cuda(const AttnParams& p, CUstream_st* stream) {
  return p.dtype == DType::BFloat16 ? dispatch_g<true, bf16>(p, stream) : dispatch_g<true, float>(p, stream);
}

}  // namespace dit_video
