// Register-blocked fp32 micro-GEMM for the tiny per-(sequence, head) products of short-sequence
// attention (16 x 16 x 64 at T = 16): C[M, N] = A[M, K] * B[K, N], row-major, N a multiple of the
// vector width and M a multiple of 8 (callers zero-pad). Broadcast A[i, k], FMA against vectors of
// B's row k: an MR x NV tile of accumulators (4x4, 4x3, 8x2, 8x1) = 8-16 independent FMA chains in
// registers.
#pragma once
#include <algorithm>
#include <cstdint>

#include "vec_util.h"

namespace dit_video::cpu {

template <int MR, int NV>
inline void gemm_block(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M,
                       int64_t K) {
  constexpr int W = Vec::size();
  for (int64_t m0 = 0; m0 < M; m0 += MR) {
    const float* a = A + m0 * lda;
    Vec acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec(0.f);
    for (int64_t k = 0; k < K; ++k) {
      Vec b[NV];
      for (int v = 0; v < NV; ++v) b[v] = Vec::loadu(B + k * ldb + v * W);
      for (int r = 0; r < MR; ++r) {
        const Vec ar(a[r * lda + k]);
        for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(ar, b[v], acc[r][v]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v].store(C + (m0 + r) * ldc + v * W);
  }
}

inline void gemm(const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t M,
                 int64_t N, int64_t K) {
  constexpr int W = Vec::size();
  for (int64_t n0 = 0; n0 < N; n0 += 4 * W) {
    const float* b = B + n0;
    float* c = C + n0;
    switch (std::min<int64_t>(4, (N - n0) / W)) {
      case 4: gemm_block<4, 4>(A, lda, b, ldb, c, ldc, M, K); break;
      case 3: gemm_block<4, 3>(A, lda, b, ldb, c, ldc, M, K); break;
      case 2: gemm_block<8, 2>(A, lda, b, ldb, c, ldc, M, K); break;
      default: gemm_block<8, 1>(A, lda, b, ldb, c, ldc, M, K); break;
    }
  }
}

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols (AVX-512: 16x16 register transposes)
inline void transpose(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  at::vec::transpose_mxn<float>(src, ld_src, dst, ld_dst, static_cast<int>(rows), static_cast<int>(cols));
}

}  // namespace dit_video::cpu
