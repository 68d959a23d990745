// Short-sequence attention on CPU, read in place from strided [batch..., L, H, D] views (the
// temporal view [B, S, T, H, D] of a fused QKV projection). One task = one (sequence, head):
// K is transposed into an fp32 scratch [D, Lk_pad] so that a query's scores are D vector FMAs over
// the keys (Lk = 16 is one AVX-512 vector), softmax in fp32, o accumulated over the rows of V.
// Forward saves o and the log-sum-exp; backward recomputes P from them (flash-attention style).
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../dit_ops.h"
#include "vec_util.h"

namespace dit_video {
namespace {

using cpu::Vec;

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

// Keys allowed for one sequence (1 = attend); returns how many.
inline int load_mask(const AttnParams& p, const BatchIndex& b, uint8_t* keep) {
  int n = 0;
  for (int j = 0; j < p.lk; ++j) {
    uint8_t m = 1;
    if (p.mask) {
      int64_t off = j * p.mask_ls;
      for (int d = 0; d < kMaxBatchDims; ++d) off += b.i[d] * p.mask_bs[d];
      m = p.mask[off] ? 1 : 0;
    }
    keep[j] = m;
    n += m;
  }
  return n;
}

// dst[d * ld + j] = row_j[d] for j < lk; padding columns are zero.
template <typename T>
void load_transposed(const AttnParams& p, const SeqView& v, const BatchIndex& b, int64_t h, float* tmp, float* dst,
                     int64_t ld) {
  std::fill(dst, dst + p.dim * ld, 0.f);
  for (int j = 0; j < p.lk; ++j) {
    cpu::to_float(row<const T>(v, b, j, h), tmp, p.dim);
    for (int d = 0; d < p.dim; ++d) dst[d * ld + j] = tmp[d];
  }
}

// s[0:ld] = sum_d q[d] * kt[d, 0:ld]
inline void scores(const float* q, const float* kt, int64_t dim, int64_t ld, float* s) {
  for (int64_t j = 0; j < ld; j += Vec::size()) {
    Vec acc(0.f);
    for (int64_t d = 0; d < dim; ++d) acc = at::vec::fmadd(Vec(q[d]), Vec::loadu(kt + d * ld + j), acc);
    acc.store(s + j);
  }
}

template <typename T>
void fwd_impl(const AttnParams& p) {
  const int64_t D = p.dim, LK = p.lk, LD = cpu::round_up(LK, Vec::size());
  const int64_t tasks = p.nbatch * p.heads;
  const float inf = std::numeric_limits<float>::infinity();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(D * LD), vv(LK * D), q(D), o(D), s(LD), tmp(D);
    std::vector<uint8_t> keep(LK);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / p.heads, h = t % p.heads;
      const BatchIndex b = unravel(n, p.batch);
      float* lse = p.lse + t * p.lq;
      const int allowed = load_mask(p, b, keep.data());
      if (allowed == 0) {  // fully masked: o = 0, lse = +inf (no gradient)
        std::fill(o.begin(), o.end(), 0.f);
        for (int i = 0; i < p.lq; ++i) {
          cpu::from_float(o.data(), row<T>(p.o, b, i, h), D);
          lse[i] = inf;
        }
        continue;
      }
      load_transposed<T>(p, p.k, b, h, tmp.data(), kt.data(), LD);
      for (int j = 0; j < LK; ++j) cpu::to_float(row<const T>(p.v, b, j, h), vv.data() + j * D, D);
      for (int i = 0; i < p.lq; ++i) {
        cpu::to_float(row<const T>(p.q, b, i, h), q.data(), D);
        for (int64_t d = 0; d < D; ++d) q[d] *= p.scale;
        scores(q.data(), kt.data(), D, LD, s.data());
        float mx = -inf;
        for (int j = 0; j < LK; ++j) {
          if (!keep[j]) s[j] = -inf;
          mx = std::max(mx, s[j]);
        }
        // p_j = exp(s_j - max) (vectorized over keys; padding and masked keys give 0)
        for (int64_t j = LK; j < LD; ++j) s[j] = -inf;
        Vec vsum(0.f);
        for (int64_t j = 0; j < LD; j += Vec::size()) {
          Vec e = (Vec::loadu(s.data() + j) - Vec(mx)).exp();
          e.store(s.data() + j);
          vsum = vsum + e;
        }
        const float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& c) { return a + c; }, vsum);
        std::fill(o.begin(), o.end(), 0.f);
        for (int j = 0; j < LK; ++j)
          if (s[j] != 0.f) cpu::axpy(s[j], vv.data() + j * D, o.data(), D);
        const float inv = 1.f / sum;
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
        cpu::from_float(o.data(), row<T>(p.o, b, i, h), D);
        lse[i] = mx + std::log(sum);
      }
    }
  });
}

template <typename T>
void bwd_impl(const AttnParams& p) {
  const int64_t D = p.dim, LK = p.lk, LD = cpu::round_up(LK, Vec::size());
  const int64_t tasks = p.nbatch * p.heads;
  const float inf = std::numeric_limits<float>::infinity();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(D * LD), vt(D * LD), kr(LK * D), dk(LK * D), dv(LK * D);
    std::vector<float> q(D), o(D), dout(D), dq(D), s(LD), dp(LD), tmp(D);
    std::vector<uint8_t> keep(LK);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / p.heads, h = t % p.heads;
      const BatchIndex b = unravel(n, p.batch);
      const float* lse = p.lse + t * p.lq;
      load_mask(p, b, keep.data());
      load_transposed<T>(p, p.k, b, h, tmp.data(), kt.data(), LD);
      load_transposed<T>(p, p.v, b, h, tmp.data(), vt.data(), LD);
      for (int j = 0; j < LK; ++j) cpu::to_float(row<const T>(p.k, b, j, h), kr.data() + j * D, D);
      std::fill(dk.begin(), dk.end(), 0.f);
      std::fill(dv.begin(), dv.end(), 0.f);
      for (int i = 0; i < p.lq; ++i) {
        std::fill(dq.begin(), dq.end(), 0.f);
        if (std::isinf(lse[i])) {  // fully masked row: no gradient
          cpu::from_float(dq.data(), row<T>(p.dq, b, i, h), D);
          continue;
        }
        cpu::to_float(row<const T>(p.q, b, i, h), q.data(), D);
        cpu::to_float(row<const T>(p.o, b, i, h), o.data(), D);
        cpu::to_float(row<const T>(p.dout, b, i, h), dout.data(), D);
        const float delta = cpu::dot(dout.data(), o.data(), D);
        scores(q.data(), kt.data(), D, LD, s.data());
        scores(dout.data(), vt.data(), D, LD, dp.data());
        const Vec vscale(p.scale), vlse(lse[i]), vdelta(delta);
        for (int64_t j = 0; j < LD; j += Vec::size()) {
          // P = exp(scale * s - lse); dS = P * (dP - delta) * scale
          Vec pj = (Vec::loadu(s.data() + j) * vscale - vlse).exp();
          pj.store(s.data() + j);
          ((Vec::loadu(dp.data() + j) - vdelta) * pj * vscale).store(dp.data() + j);
        }
        for (int j = 0; j < LK; ++j) {
          if (!keep[j]) continue;
          cpu::axpy(dp[j], kr.data() + j * D, dq.data(), D);
          cpu::axpy(s[j], dout.data(), dv.data() + j * D, D);
          cpu::axpy(dp[j], q.data(), dk.data() + j * D, D);
        }
        cpu::from_float(dq.data(), row<T>(p.dq, b, i, h), D);
      }
      for (int j = 0; j < LK; ++j) {
        cpu::from_float(dk.data() + j * D, row<T>(p.dk, b, j, h), D);
        cpu::from_float(dv.data() + j * D, row<T>(p.dv, b, j, h), D);
      }
    }
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
