// bf16 x bf16 -> fp32 GEMMs for the attention tiles, on oneDNN's BRGeMM micro-kernel (the one ATen's
// CPU flash attention calls: AMX tiles on Xeons that have them), through ATen's cpublas wrapper.
//
// B operands are packed in VNNI order, blocks of kNB columns: block n0 holds B[:, n0 : n0 + nb] as
// [K/2][nb][2] (rows 2i and 2i+1 interleaved), at offset n0 * K. cpublas::pack writes exactly this
// layout (checked for nb = 16..64); packing here lets a transposed B (K^T from K's rows) be one
// 32-bit transpose instead of a transpose and a pack. K and N must be multiples of 16 (callers pad).
#pragma once
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "vec_util.h"

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace dit_video::cpu {

constexpr int64_t kNB = 64;  // BRGeMM's packed-B block width (16, 32, 48 or 64 columns)

// The path exists in AVX-512 builds on CPUs where oneDNN packs bf16 for BRGeMM (AMX); it can be turned
// off with DIT_VIDEO_CPU_BRGEMM=0 (read at each call: tests run both paths in one process).
inline bool bf16_brgemm_usable() {
#if defined(CPU_CAPABILITY_AVX512)
  static const bool hw = at::native::cpublas::could_pack(at::kBFloat16);
  if (!hw) return false;
  const char* env = std::getenv("DIT_VIDEO_CPU_BRGEMM");
  return !(env && std::strcmp(env, "0") == 0);
#else
  return false;
#endif
}

// B = src [K, N] row-major (ld) -> packed
inline void pack_rows(const BF16* src, int64_t ld, int64_t K, int64_t N, BF16* out) {
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t nb = std::min(kNB, N - n0);
    BF16* o = out + n0 * K;
    for (int64_t k = 0; k < K; k += 2) {
      const BF16* r0 = src + k * ld + n0;
      const BF16* r1 = r0 + ld;
      BF16* d = o + k * nb;
#if defined(CPU_CAPABILITY_AVX512)
      for (int64_t j = 0; j < nb; j += 16) {
        const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + j)));
        const __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + j)));
        _mm512_storeu_si512(d + 2 * j, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
      }
#else
      for (int64_t j = 0; j < nb; ++j) {
        d[2 * j] = r0[j];
        d[2 * j + 1] = r1[j];
      }
#endif
    }
  }
}

// B = src^T, src [N, K] row-major (ld, even) -> packed. Element pairs (2i, 2i+1) of a src row are one
// 32-bit word of B's packed row i, so this is a 32-bit transpose of src viewed as [N, K/2].
inline void pack_transposed(const BF16* src, int64_t ld, int64_t N, int64_t K, BF16* out) {
  static_assert(sizeof(float) == 2 * sizeof(BF16));
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t nb = std::min(kNB, N - n0);
    at::vec::transpose_mxn<float>(reinterpret_cast<const float*>(src + n0 * ld), ld / 2,
                                  reinterpret_cast<float*>(out + n0 * K), nb, static_cast<int>(nb),
                                  static_cast<int>(K / 2));
  }
}

// C[M, N] (fp32, ldc) = A[M, K] (bf16 row-major, lda) * B (packed above)
inline void gemm_bf16(int64_t M, int64_t N, int64_t K, const BF16* A, int64_t lda, const BF16* Bp, float* C,
                      int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t nb = std::min(kNB, N - n0);
    at::native::cpublas::brgemm(M, nb, K, lda, nb, ldc, /*add_C=*/false, A, Bp + n0 * K, C + n0, /*is_vnni=*/true);
  }
}

inline void gemm_bf16_done() { at::native::cpublas::brgemm_release(); }

}  // namespace dit_video::cpu
