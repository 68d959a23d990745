// Short-sequence attention on CPU, read in place from strided [batch..., L, H, D] views (the
// temporal view [B, S, T, H, D] of a fused QKV projection); o written through its own strides.
//
// One task = one (sequence, head). Its rows are gathered (converted to fp32, zero-padded: rows to a
// multiple of 4, columns to the vector width) into a per-thread scratch, and the products are tiny
// register-blocked GEMMs (small_gemm.h): S = Q K^T, P = softmax(S), O = P V. Forward saves o and the
// log-sum-exp; backward recomputes P from them (flash-attention's recurrences):
// dP = dO V^T, dS = P (dP - rowsum(dO o)), dQ = dS K, dK = dS^T Q, dV = P^T dO.
// Fully masked rows: o = 0, lse = +inf, no gradient.
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../dit_ops.h"
#include "small_gemm.h"
#include "vec_util.h"

namespace dit_video {
namespace {

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

template <typename Fn>
void for_each_task(const AttnParams& p, int64_t hpt, const Fn& fn) {
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
  });
}

template <typename T>
void fwd_impl(const AttnParams& p) {
  const Dims z(p);
  const int64_t qn = z.mq * z.dp, kn = z.nk * z.dp, sn = z.mq * z.nk;
  const int64_t hpt = heads_per_task(p, z, 2 * qn + 3 * kn + sn);
  // per-thread scratch, allocated once per parallel chunk
  for_each_task(p, hpt, [&](const Task& t, const Task* next, bool prefetch_only) {
    if (next) {
      prefetch<T>(p, p.q, *next, z.lq);
      prefetch<T>(p, p.k, *next, z.lk);
      prefetch<T>(p, p.v, *next, z.lk);
    }
    if (prefetch_only) return;
    thread_local std::vector<float> buf;
    const int64_t nh = t.h1 - t.h0;
    buf.resize(nh * (2 * qn + 2 * kn) + kn + sn + z.nk);
    float* q = buf.data();
    float* o = q + nh * qn;
    float* k = o + nh * qn;
    float* v = k + nh * kn;
    float* kt = v + nh * kn;
    float* s = kt + kn;
    float* madd = s + sn;
    if (load_mask(p, t.b, z.nk, madd) == 0) {  // fully masked: o = 0, lse = +inf (no gradient)
      std::fill(o, o + nh * qn, 0.f);
      scatter<T>(p, p.o, t, z.lq, z.mq, z.dp, o);
      for (int64_t h = t.h0; h < t.h1; ++h) std::fill(p.lse + (t.n * p.heads + h) * p.lq, p.lse + (t.n * p.heads + h + 1) * p.lq, kInf);
      return;
    }
    gather<T>(p, p.q, t, z.lq, z.mq, z.dp, q);
    gather<T>(p, p.k, t, z.lk, z.nk, z.dp, k);
    gather<T>(p, p.v, t, z.lk, z.nk, z.dp, v);
    for (int64_t h = t.h0; h < t.h1; ++h) {
      const int64_t hi = h - t.h0;
      float* lse = p.lse + (t.n * p.heads + h) * p.lq;
      cpu::transpose(k + hi * kn, z.dp, kt, z.nk, z.nk, z.dp);
      cpu::gemm(q + hi * qn, z.dp, kt, z.nk, s, z.nk, z.mq, z.nk, z.dp);  // S = Q K^T
      for (int64_t i = 0; i < z.mq; ++i) {
        float* si = s + i * z.nk;
        if (i >= z.lq) {  // padding rows
          std::fill(si, si + z.nk, 0.f);
          continue;
        }
        const Vec vscale(p.scale);
        for (int64_t j = 0; j < z.nk; j += W) at::vec::fmadd(Vec::loadu(si + j), vscale, Vec::loadu(madd + j)).store(si + j);
        const float mx = reduce_max(si, z.nk);
        Vec vsum(0.f);
        for (int64_t j = 0; j < z.nk; j += W) {
          const Vec e = (Vec::loadu(si + j) - Vec(mx)).exp();
          e.store(si + j);
          vsum = vsum + e;
        }
        const float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, vsum);
        const Vec inv(1.f / sum);
        for (int64_t j = 0; j < z.nk; j += W) (Vec::loadu(si + j) * inv).store(si + j);
        lse[i] = mx + std::log(sum);
      }
      cpu::gemm(s, z.nk, v + hi * kn, z.dp, o + hi * qn, z.dp, z.mq, z.dp, z.nk);  // O = P V
    }
    scatter<T>(p, p.o, t, z.lq, z.mq, z.dp, o);
  });
}

template <typename T>
void bwd_impl(const AttnParams& p) {
  const Dims z(p);
  const int64_t qn = z.mq * z.dp, kn = z.nk * z.dp, sn = z.mq * z.nk;
  const int64_t hpt = heads_per_task(p, z, 4 * qn + 4 * kn + 4 * sn);
  for_each_task(p, hpt, [&](const Task& t, const Task* next, bool prefetch_only) {
    if (next) {
      prefetch<T>(p, p.q, *next, z.lq);
      prefetch<T>(p, p.dout, *next, z.lq);
      prefetch<T>(p, p.o, *next, z.lq);
      prefetch<T>(p, p.k, *next, z.lk);
      prefetch<T>(p, p.v, *next, z.lk);
    }
    if (prefetch_only) return;
    thread_local std::vector<float> buf;
    const int64_t nh = t.h1 - t.h0;
    buf.resize(nh * (4 * qn + 4 * kn) + 2 * kn + 4 * sn + z.nk + z.dp);
    float* q = buf.data();
    float* dout = q + nh * qn;
    float* o = dout + nh * qn;
    float* dq = o + nh * qn;
    float* k = dq + nh * qn;
    float* v = k + nh * kn;
    float* dk = v + nh * kn;
    float* dv = dk + nh * kn;
    float* kt = dv + nh * kn;
    float* vt = kt + kn;
    float* s = vt + kn;
    float* dp = s + sn;
    float* pt = dp + sn;
    float* dst = pt + sn;
    float* madd = dst + sn;
    load_mask(p, t.b, z.nk, madd);
    gather<T>(p, p.q, t, z.lq, z.mq, z.dp, q);
    gather<T>(p, p.dout, t, z.lq, z.mq, z.dp, dout);
    gather<T>(p, p.o, t, z.lq, z.mq, z.dp, o);
    gather<T>(p, p.k, t, z.lk, z.nk, z.dp, k);
    gather<T>(p, p.v, t, z.lk, z.nk, z.dp, v);
    for (int64_t h = t.h0; h < t.h1; ++h) {
      const int64_t hi = h - t.h0;
      const float* lse = p.lse + (t.n * p.heads + h) * p.lq;
      float *qh = q + hi * qn, *doh = dout + hi * qn, *oh = o + hi * qn;
      cpu::transpose(k + hi * kn, z.dp, kt, z.nk, z.nk, z.dp);
      cpu::transpose(v + hi * kn, z.dp, vt, z.nk, z.nk, z.dp);
      cpu::gemm(qh, z.dp, kt, z.nk, s, z.nk, z.mq, z.nk, z.dp);   // S = Q K^T
      cpu::gemm(doh, z.dp, vt, z.nk, dp, z.nk, z.mq, z.nk, z.dp);  // dP = dO V^T
      for (int64_t i = 0; i < z.mq; ++i) {
        float* si = s + i * z.nk;
        float* di = dp + i * z.nk;
        if (i >= z.lq || std::isinf(lse[i])) {  // padding or fully masked row: P = dS = 0
          std::fill(si, si + z.nk, 0.f);
          std::fill(di, di + z.nk, 0.f);
          continue;
        }
        const float delta = cpu::dot(doh + i * z.dp, oh + i * z.dp, z.d);
        const Vec vscale(p.scale), vlse(lse[i]), vdelta(delta);
        for (int64_t j = 0; j < z.nk; j += W) {
          // P = exp(scale s + mask - lse); dS = P (dP - delta) scale
          const Vec pj = (at::vec::fmadd(Vec::loadu(si + j), vscale, Vec::loadu(madd + j)) - vlse).exp();
          pj.store(si + j);
          ((Vec::loadu(di + j) - vdelta) * pj * vscale).store(di + j);
        }
      }
      cpu::gemm(dp, z.nk, k + hi * kn, z.dp, dq + hi * qn, z.dp, z.mq, z.dp, z.nk);  // dQ = dS K
      cpu::transpose(s, z.nk, pt, z.mq, z.mq, z.nk);
      cpu::transpose(dp, z.nk, dst, z.mq, z.mq, z.nk);
      cpu::gemm(pt, z.mq, doh, z.dp, dv + hi * kn, z.dp, z.nk, z.dp, z.mq);  // dV = P^T dO
      cpu::gemm(dst, z.mq, qh, z.dp, dk + hi * kn, z.dp, z.nk, z.dp, z.mq);  // dK = dS^T Q
    }
    scatter<T>(p, p.dq, t, z.lq, z.mq, z.dp, dq);
    scatter<T>(p, p.dk, t, z.lk, z.nk, z.dp, dk);
    scatter<T>(p, p.dv, t, z.lk, z.nk, z.dp, dv);
  });
}

}  // namespace

void temporal_attention_fwd_cpu(const AttnParams& p) {
  if (p.dtype == DType::BFloat16)
    fwd_impl<cpu::BF16>(p);
  else
    fwd_impl<float>(p);
}

void temporal_attention_bwd_cpu(const AttnParams& p) {
  if (p.dtype == DType::BFloat16)
    bwd_impl<cpu::BF16>(p);
  else
    bwd_impl<float>(p);
}

}  // namespace dit_video
