// Row helpers for the CPU kernels: convert a row of T (float or BFloat16) to fp32 scratch and back
// with ATen's Vectorized<T> (AVX-512 / AVX2 / scalar, chosen by CPU_CAPABILITY at build time).
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <cstdint>

namespace dit_video::cpu {

using Vec = at::vec::Vectorized<float>;
using BF16 = c10::BFloat16;

// fp32 rows are short (a head: 64-128 floats): an inline vector copy beats a memcpy call
inline void to_float(const float* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) Vec::loadu(src + i).store(dst + i);
  for (; i < n; ++i) dst[i] = src[i];
}

inline void to_float(const BF16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec v;
    at::vec::load_fp32_from_bf16(src + i, v);
    v.store(dst + i);
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void from_float(const float* src, float* dst, int64_t n) { to_float(src, dst, n); }

inline void from_float(const float* src, BF16* dst, int64_t n) {
  using VecB = at::vec::Vectorized<BF16>;
  int64_t i = 0;
  for (; i + VecB::size() <= n; i += VecB::size()) {
    at::vec::convert_float_bfloat16(Vec::loadu(src + i), Vec::loadu(src + i + Vec::size())).store(dst + i);
  }
  for (; i < n; ++i) dst[i] = BF16(src[i]);
}

// Round-trip through T: the value a stored T would hold (identity for float).
inline void round_to(float*, int64_t, const float*) {}
inline void round_to(float* x, int64_t n, const BF16*) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(BF16(x[i]));
}

inline float dot(const float* a, const float* b, int64_t n) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) acc = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), acc);
  float s = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline float dot(const BF16* a, const BF16* b, int64_t n) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec x, y;
    at::vec::load_fp32_from_bf16(a + i, x);
    at::vec::load_fp32_from_bf16(b + i, y);
    acc = at::vec::fmadd(x, y, acc);
  }
  float s = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; i < n; ++i) s += static_cast<float>(a[i]) * static_cast<float>(b[i]);
  return s;
}

// y += a * x
inline void axpy(float a, const float* x, float* y, int64_t n) {
  const Vec va(a);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) at::vec::fmadd(va, Vec::loadu(x + i), Vec::loadu(y + i)).store(y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace dit_video::cpu
