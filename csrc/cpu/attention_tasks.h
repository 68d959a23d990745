// The task machinery of the short-sequence attention kernels on CPU (temporal_attention.cpp: fp32
// scratch; attention_bf16.cpp: bf16 operands on AMX / AVX512-BF16): strided [batch..., L, H, D] row
// access, key masks, the (sequence, head group) tasks and their prefetch, gathered into scratch tiles.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../dit_ops.h"
#include "bf16_gemm.h"
#include "vec_util.h"

namespace dit_video::attn {

using cpu::Vec;
constexpr int W = Vec::size();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct BatchIndex {
  int64_t i[kMaxBatchDims];
};

inline BatchIndex unravel(int64_t n, const int64_t* batch) {
  BatchIndex b;
  for (int d = kMaxBatchDims - 1; d >= 0; --d) {
    b.i[d] = n % batch[d];
    n /= batch[d];
  }
  return b;
}

template <typename T>
inline T* row(const SeqView& v, const BatchIndex& b, int64_t l, int64_t h) {
  int64_t off = l * v.ls + h * v.hs;
  for (int d = 0; d < kMaxBatchDims; ++d) off += b.i[d] * v.bs[d];
  return static_cast<T*>(v.ptr) + off;
}

// Additive key mask of one sequence: 0 = attend, -inf = masked or padding (j >= Lk, up to nk).
// Returns how many keys are allowed.
inline int load_mask(const AttnParams& p, const BatchIndex& b, int64_t nk, float* madd) {
  int n = 0;
  for (int64_t j = 0; j < nk; ++j) {
    bool m = j < p.lk;
    if (m && p.mask) {
      int64_t off = j * p.mask_ls;
      for (int d = 0; d < kMaxBatchDims; ++d) off += b.i[d] * p.mask_bs[d];
      m = p.mask[off] != 0;
    }
    madd[j] = m ? 0.f : -kInf;
    n += m;
  }
  return n;
}

inline float reduce_max(const float* x, int64_t n) {
  Vec m(-kInf);
  for (int64_t j = 0; j < n; j += W) m = at::vec::maximum(m, Vec::loadu(x + j));
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& c) { return at::vec::maximum(a, c); }, m);
}

// Padded sizes of one task's tiles.
struct Dims {
  int64_t lq, lk, d;  // true sizes
  int64_t mq, nk, dp;  // Lq -> multiple of 4 and W, Lk -> multiple of W, D -> multiple of W
  explicit Dims(const AttnParams& p)
      : lq(p.lq), lk(p.lk), d(p.dim), mq(cpu::round_up(p.lq, W)), nk(cpu::round_up(p.lk, W)),
        dp(cpu::round_up(p.dim, W)) {}
};

// A task is one sequence and a group of heads [h0, h1). Rows are gathered row-major over (row, head),
// which for the token layout (heads adjacent in memory) reads each token's heads as one contiguous
// run: long sequential reads instead of Lq x H short strided ones.
struct Task {
  BatchIndex b;
  int64_t n, h0, h1;
};

inline int64_t heads_per_task(const AttnParams& p, const Dims& z, int64_t floats_per_head) {
  // all heads of a sequence in one task when there are enough sequences to keep every thread busy
  // and the per-thread scratch stays in L2 (<= 512 KiB)
  if (p.nbatch < 4 * at::get_num_threads()) return 1;
  const int64_t fit = std::max<int64_t>(1, (512 * 1024 / 4) / std::max<int64_t>(1, floats_per_head));
  (void)z;
  return std::min<int64_t>(p.heads, fit);
}

// rows [0, L) of heads [h0, h1) -> dst[h - h0][L_pad][dp] fp32 (zero padding)
template <typename T>
void gather(const AttnParams& p, const SeqView& v, const Task& t, int64_t L, int64_t L_pad, int64_t dp, float* dst) {
  const int64_t tile = L_pad * dp;
  for (int64_t j = 0; j < L; ++j)
    for (int64_t h = t.h0; h < t.h1; ++h) {
      float* d = dst + (h - t.h0) * tile + j * dp;
      cpu::to_float(row<const T>(v, t.b, j, h), d, p.dim);
      std::fill(d + p.dim, d + dp, 0.f);
    }
  for (int64_t h = t.h0; h < t.h1; ++h) std::fill(dst + (h - t.h0) * tile + L * dp, dst + (h - t.h0 + 1) * tile, 0.f);
}

template <typename T>
void scatter(const AttnParams& p, const SeqView& v, const Task& t, int64_t L, int64_t L_pad, int64_t dp,
             const float* src) {
  for (int64_t j = 0; j < L; ++j)
    for (int64_t h = t.h0; h < t.h1; ++h)
      cpu::from_float(src + (h - t.h0) * L_pad * dp + j * dp, row<T>(v, t.b, j, h), p.dim);
}

// Software prefetch (into L2) of a task's rows, issued a few tasks ahead: the strided rows of the
// coming sequences stream in while this one computes.
template <typename T>
void prefetch(const AttnParams& p, const SeqView& v, const Task& t, int64_t L) {
  const int64_t bytes = p.dim * int64_t(sizeof(T));
  for (int64_t j = 0; j < L; ++j)
    for (int64_t h = t.h0; h < t.h1; ++h) {
      const char* r = reinterpret_cast<const char*>(row<const T>(v, t.b, j, h));
      for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(r + off, 0, 2);
    }
}

inline Task make_task(const AttnParams& p, int64_t i, int64_t hpt) {
  const int64_t groups = (p.heads + hpt - 1) / hpt;
  Task t;
  t.n = i / groups;
  t.h0 = (i % groups) * hpt;
  t.h1 = std::min<int64_t>(p.heads, t.h0 + hpt);
  t.b = unravel(t.n, p.batch);
  return t;
}

// fn(task, task to prefetch or nullptr): prefetches run kPrefetchAhead tasks ahead of the compute
constexpr int64_t kPrefetchAhead = 2;

// done(): once per thread chunk, after its last task (releases the AMX tile state of the bf16 path)
template <typename Fn, typename Done = void (*)()>
void for_each_task(const AttnParams& p, int64_t hpt, const Fn& fn, const Done& done = [] {}) {
  const int64_t groups = (p.heads + hpt - 1) / hpt;
  at::parallel_for(0, p.nbatch * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Task t = make_task(p, i, hpt);
      Task ahead;
      const bool pre = i + kPrefetchAhead < end;
      if (pre) ahead = make_task(p, i + kPrefetchAhead, hpt);
      if (i == begin)  // warm-up: the first tasks of this chunk
        for (int64_t j = i + 1; j < std::min(end, i + kPrefetchAhead); ++j) {
          const Task w = make_task(p, j, hpt);
          fn(w, &w, /*prefetch_only=*/true);
        }
      fn(t, pre ? &ahead : nullptr, false);
    }
    done();
  });
}

// rows [0, L) of heads [h0, h1) -> dst[h - h0][L_pad][dp] as they are (bf16 -> bf16), zero padding
template <typename T>
void gather_raw(const AttnParams& p, const SeqView& v, const Task& t, int64_t L, int64_t L_pad, int64_t dp, T* dst) {
  const int64_t tile = L_pad * dp;
  for (int64_t j = 0; j < L; ++j)
    for (int64_t h = t.h0; h < t.h1; ++h) {
      T* d = dst + (h - t.h0) * tile + j * dp;
      std::memcpy(d, row<const T>(v, t.b, j, h), p.dim * sizeof(T));
      std::fill(d + p.dim, d + dp, T(0.f));
    }
  for (int64_t h = t.h0; h < t.h1; ++h) std::fill(dst + (h - t.h0) * tile + L * dp, dst + (h - t.h0 + 1) * tile, T(0.f));
}

// Softmax of one score row in place: P = softmax(scale s + mask); returns the row's lse.
inline float softmax_row(float* si, const float* madd, int64_t nk, float scale) {
  const Vec vscale(scale);
  for (int64_t j = 0; j < nk; j += W) at::vec::fmadd(Vec::loadu(si + j), vscale, Vec::loadu(madd + j)).store(si + j);
  const float mx = reduce_max(si, nk);
  Vec vsum(0.f);
  for (int64_t j = 0; j < nk; j += W) {
    const Vec e = (Vec::loadu(si + j) - Vec(mx)).exp();
    e.store(si + j);
    vsum = vsum + e;
  }
  const float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, vsum);
  const Vec inv(1.f / sum);
  for (int64_t j = 0; j < nk; j += W) (Vec::loadu(si + j) * inv).store(si + j);
  return mx + std::log(sum);
}

// Backward, rows of one head: S -> P = exp(scale s + mask - lse), dP -> dS = P (dP - delta) scale with
// delta = rowsum(dO o); padding and fully masked rows get P = dS = 0. dO, o rows: T (float or bf16), ld dp.
template <typename T>
void probs_and_dscores(const AttnParams& p, const Dims& z, const float* lse, const float* madd, const T* dout,
                       const T* o, float* s, float* dp) {
  for (int64_t i = 0; i < z.mq; ++i) {
    float* si = s + i * z.nk;
    float* di = dp + i * z.nk;
    if (i >= z.lq || std::isinf(lse[i])) {
      std::fill(si, si + z.nk, 0.f);
      std::fill(di, di + z.nk, 0.f);
      continue;
    }
    const float delta = cpu::dot(dout + i * z.dp, o + i * z.dp, z.d);
    const Vec vscale(p.scale), vlse(lse[i]), vdelta(delta);
    for (int64_t j = 0; j < z.nk; j += W) {
      const Vec pj = (at::vec::fmadd(Vec::loadu(si + j), vscale, Vec::loadu(madd + j)) - vlse).exp();
      pj.store(si + j);
      ((Vec::loadu(di + j) - vdelta) * pj * vscale).store(di + j);
    }
  }
}

// attention_bf16.cpp: the bf16 path on bf16 GEMM operands, on the engine given (bf16_gemm.h)
void fwd_bf16(const AttnParams& p, cpu::Bf16Gemm engine);
void bwd_bf16(const AttnParams& p, cpu::Bf16Gemm engine);

}  // namespace dit_video::attn
