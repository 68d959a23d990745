// bf16 x bf16 -> fp32 GEMMs for the attention tiles, on one of two engines:
// * oneDNN's BRGeMM micro-kernel (the one ATen's CPU flash attention calls: AMX tiles on Xeons that have
//   them), through ATen's cpublas wrapper, where oneDNN packs bf16 for it;
// * on CPUs with AVX512-BF16 where oneDNN does not pack bf16 (Zen 4 EPYCs; Cooper Lake Xeons), the
//   register-blocked micro-kernel below on vdpbf16ps (two bf16 products per fp32 lane per instruction),
//   compiled with a target attribute so the build stays portable, chosen at run time.
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

enum class Bf16Gemm { None, Brgemm, Dpbf16 };

// Which engine runs here (AVX-512 builds only), from measurements (fwd+bwd, bf16, 2 threads, H6 D64, against the
// fp32-scratch path): BRGeMM where oneDNN packs bf16 (AMX Xeons: 0.46-0.82x for keys 32-256; the caller keeps
// scratch for keys <= 16, where BRGeMM measured 0.82-1.33x), else vdpbf16ps where the CPU has it (Zen 4 EPYC,
// where oneDNN packs no bf16: 0.63x at keys 256, 0.70-0.84x for keys 16-128; on the AMX Xeon it measured
// 1.05-1.2x, which BRGeMM's priority keeps out), else none (the caller's fp32-scratch path).
// DIT_VIDEO_CPU_BF16_GEMM = off | dpbf16 | brgemm overrides (read at each call: tests run every path in one
// process); an engine the CPU lacks falls back to none.
inline Bf16Gemm bf16_gemm_engine() {
#if defined(CPU_CAPABILITY_AVX512)
  static const bool brgemm = at::native::cpublas::could_pack(at::kBFloat16);
  static const bool dpbf16 = __builtin_cpu_supports("avx512bf16");
  const char* env = std::getenv("DIT_VIDEO_CPU_BF16_GEMM");
  if (env && std::strcmp(env, "off") == 0) return Bf16Gemm::None;
  if (env && std::strcmp(env, "dpbf16") == 0) return dpbf16 ? Bf16Gemm::Dpbf16 : Bf16Gemm::None;
  if (env && std::strcmp(env, "brgemm") == 0) return brgemm ? Bf16Gemm::Brgemm : Bf16Gemm::None;
  return brgemm ? Bf16Gemm::Brgemm : dpbf16 ? Bf16Gemm::Dpbf16 : Bf16Gemm::None;
#else
  return Bf16Gemm::None;
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

#if defined(CPU_CAPABILITY_AVX512)
// One packed block (nb = 16 NV columns): C[m0 : m0 + MR, :nb] = A rows x B. Broadcast the bf16 pair
// A[r, 2i : 2i + 2] as one 32-bit word, vdpbf16ps against the 32 bf16 of the block's packed row i.
template <int MR, int NV>
__attribute__((target("avx512f,avx512bf16"))) inline void dpbf16_block(int64_t K, const BF16* A, int64_t lda,
                                                                      const BF16* Bp, float* C, int64_t ldc) {
  constexpr int64_t nb = 16 * NV;
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 2) {
    __m512i b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(Bp + k * nb + 32 * v);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + k, sizeof(pair));
      const __m512i a = _mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)a, (__m512bh)b[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

template <int NV>
inline void dpbf16_panel(int64_t M, int64_t K, const BF16* A, int64_t lda, const BF16* Bp, float* C, int64_t ldc) {
  constexpr int MR = NV >= 3 ? 4 : 8;  // 12-16 accumulators
  int64_t m = 0;
  for (; m + MR <= M; m += MR) dpbf16_block<MR, NV>(K, A + m * lda, lda, Bp, C + m * ldc, ldc);
  for (; m < M; ++m) dpbf16_block<1, NV>(K, A + m * lda, lda, Bp, C + m * ldc, ldc);
}
#endif

// C[M, N] (fp32, ldc) = A[M, K] (bf16 row-major, lda) * B (packed above), on the engine given
inline void gemm_bf16(Bf16Gemm engine, int64_t M, int64_t N, int64_t K, const BF16* A, int64_t lda, const BF16* Bp,
                      float* C, int64_t ldc) {
#if defined(CPU_CAPABILITY_AVX512)
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t nb = std::min(kNB, N - n0);
    const BF16* b = Bp + n0 * K;
    if (engine == Bf16Gemm::Brgemm) {
      at::native::cpublas::brgemm(M, nb, K, lda, nb, ldc, /*add_C=*/false, A, b, C + n0, /*is_vnni=*/true);
      continue;
    }
    switch (nb / 16) {
      case 4: dpbf16_panel<4>(M, K, A, lda, b, C + n0, ldc); break;
      case 3: dpbf16_panel<3>(M, K, A, lda, b, C + n0, ldc); break;
      case 2: dpbf16_panel<2>(M, K, A, lda, b, C + n0, ldc); break;
      default: dpbf16_panel<1>(M, K, A, lda, b, C + n0, ldc); break;
    }
  }
#else
  (void)engine, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)Bp, (void)C, (void)ldc;
#endif
}

inline void gemm_bf16_done(Bf16Gemm engine) {
  if (engine == Bf16Gemm::Brgemm) at::native::cpublas::brgemm_release();
}

}  // namespace dit_video::cpu
