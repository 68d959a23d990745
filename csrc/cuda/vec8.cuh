// 8-element chunks moved as 16-byte (bf16) or 2x16-byte (fp32) vector loads/stores, math in fp32.
// Torch-free.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../dit_ops.h"

namespace dit_video::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ void load8(const float* p, float (&f)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

__device__ __forceinline__ void load8(const bf16* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 t = __bfloat1622float2(h[k]);
    f[2 * k] = t.x, f[2 * k + 1] = t.y;
  }
}

__device__ __forceinline__ void store8(float* p, const float (&f)[8]) {
  *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(f[4], f[5], f[6], f[7]);
}

__device__ __forceinline__ void store8(bf16* p, const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}

// The value a stored T holds.
__device__ __forceinline__ float round_to(float x, const float*) { return x; }
__device__ __forceinline__ float round_to(float x, const bf16*) { return __bfloat162float(__float2bfloat16_rn(x)); }

// Copy one 8-element chunk (16 or 32 bytes) global -> shared, raw.
template <typename T>
__device__ __forceinline__ void copy8(T* dst, const T* src) {
  const uint4* s = reinterpret_cast<const uint4*>(src);
  uint4* d = reinterpret_cast<uint4*>(dst);
#pragma unroll
  for (int u = 0; u < int(sizeof(T)) / 2; ++u) d[u] = s[u];
}

template <typename T>
__device__ __forceinline__ void zero8(T* dst) {
  uint4* d = reinterpret_cast<uint4*>(dst);
#pragma unroll
  for (int u = 0; u < int(sizeof(T)) / 2; ++u) d[u] = make_uint4(0, 0, 0, 0);
}

// Sum over the G lanes of an aligned lane group (G a power of two dividing 32).
template <int G>
__device__ __forceinline__ float group_sum(float s) {
#pragma unroll
  for (int off = G / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

inline const char* last_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
}

}  // namespace dit_video::cuda
