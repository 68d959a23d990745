// Fused gated residual + adaLN on CPU: r = x + gate * y; out = LayerNorm(r) * (1 + scale) + shift,
// one pass over each token row (fp32 math, two-pass mean/variance on the row in L1), modulation
// rows loaded once per (b, m) chunk. Backward recomputes the normalised row from r, mean and rstd
// and reduces dgate/dshift/dscale per chunk, then per (b, m).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../dit_ops.h"
#include "vec_util.h"

namespace dit_video {
namespace {

using cpu::Vec;

struct Chunking {
  int64_t groups, per_group, rows;
};

inline Chunking chunking(const AdaLNParams& p) {
  const int64_t groups = p.B * p.M;
  const int64_t want = std::max<int64_t>(1, (4 * at::get_num_threads() + groups - 1) / groups);
  const int64_t per_group = std::max<int64_t>(1, std::min<int64_t>(want, p.N / 16));
  return {groups, per_group, (p.N + per_group - 1) / per_group};
}

template <typename T>
void fwd_impl(const AdaLNParams& p) {
  const int64_t D = p.D;
  const Chunking c = chunking(p);
  const bool res = p.y != nullptr;
  at::parallel_for(0, c.groups * c.per_group, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> gate(D), shift(D), scale1(D), r(D), y(D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / c.per_group, n0 = (t % c.per_group) * c.rows, n1 = std::min(p.N, n0 + c.rows);
      const int64_t b = g / p.M, m = g % p.M;
      if (res) cpu::to_float(static_cast<const T*>(p.gate) + g * D, gate.data(), D);
      cpu::to_float(static_cast<const T*>(p.shift) + g * D, shift.data(), D);
      cpu::to_float(static_cast<const T*>(p.scale) + g * D, scale1.data(), D);
      for (int64_t d = 0; d < D; ++d) scale1[d] += 1.f;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t rowi = g * p.N + n;
        cpu::to_float(static_cast<const T*>(p.x) + b * p.x_s[0] + m * p.x_s[1] + n * p.x_s[2], r.data(), D);
        if (res) {
          cpu::to_float(static_cast<const T*>(p.y) + b * p.y_s[0] + m * p.y_s[1] + n * p.y_s[2], y.data(), D);
          int64_t d = 0;
          for (; d + Vec::size() <= D; d += Vec::size())
            at::vec::fmadd(Vec::loadu(gate.data() + d), Vec::loadu(y.data() + d), Vec::loadu(r.data() + d))
                .store(r.data() + d);
          for (; d < D; ++d) r[d] += gate[d] * y[d];
          cpu::round_to(r.data(), D, static_cast<const T*>(nullptr));
          cpu::from_float(r.data(), static_cast<T*>(p.r) + rowi * D, D);
        }
        // two-pass mean / variance over the row (in L1)
        Vec acc(0.f);
        int64_t d = 0;
        for (; d + Vec::size() <= D; d += Vec::size()) acc = acc + Vec::loadu(r.data() + d);
        float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& e) { return a + e; }, acc);
        for (; d < D; ++d) sum += r[d];
        const float mean = sum / D;
        acc = Vec(0.f);
        d = 0;
        for (; d + Vec::size() <= D; d += Vec::size()) {
          Vec c0 = Vec::loadu(r.data() + d) - Vec(mean);
          acc = at::vec::fmadd(c0, c0, acc);
        }
        float sq = at::vec::vec_reduce_all<float>([](Vec& a, Vec& e) { return a + e; }, acc);
        for (; d < D; ++d) sq += (r[d] - mean) * (r[d] - mean);
        const float rstd = 1.f / std::sqrt(sq / D + p.eps);
        p.mean[rowi] = mean;
        p.rstd[rowi] = rstd;
        d = 0;
        const Vec vm(mean), vr(rstd);
        for (; d + Vec::size() <= D; d += Vec::size())
          at::vec::fmadd((Vec::loadu(r.data() + d) - vm) * vr, Vec::loadu(scale1.data() + d), Vec::loadu(shift.data() + d))
              .store(r.data() + d);
        for (; d < D; ++d) r[d] = (r[d] - mean) * rstd * scale1[d] + shift[d];
        cpu::from_float(r.data(), static_cast<T*>(p.out) + rowi * D, D);
      }
    }
  });
}

template <typename T>
void bwd_impl(const AdaLNParams& p) {
  const int64_t D = p.D;
  const Chunking c = chunking(p);
  const bool res = p.y != nullptr;
  const int64_t tasks = c.groups * c.per_group;
  std::vector<float> partial(tasks * 3 * D, 0.f);  // per task: dgate, dshift, dscale
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> gate(D), scale1(D), r(D), go(D), dhn(D), dr(D), y(D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / c.per_group, n0 = (t % c.per_group) * c.rows, n1 = std::min(p.N, n0 + c.rows);
      const int64_t b = g / p.M, m = g % p.M;
      float* dgate = partial.data() + t * 3 * D;
      float* dshift = dgate + D;
      float* dscale = dshift + D;
      if (res) cpu::to_float(static_cast<const T*>(p.gate) + g * D, gate.data(), D);
      cpu::to_float(static_cast<const T*>(p.scale) + g * D, scale1.data(), D);
      for (int64_t d = 0; d < D; ++d) scale1[d] += 1.f;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t rowi = g * p.N + n;
        const float mean = p.mean[rowi], rstd = p.rstd[rowi];
        cpu::to_float(static_cast<const T*>(p.x) + b * p.x_s[0] + m * p.x_s[1] + n * p.x_s[2], r.data(), D);
        cpu::to_float(static_cast<const T*>(p.grad_out) + rowi * D, go.data(), D);
        const Vec vm(mean), vr(rstd);
        Vec a1(0.f), a2(0.f);
        int64_t d = 0;
        for (; d + Vec::size() <= D; d += Vec::size()) {
          const Vec hn = (Vec::loadu(r.data() + d) - vm) * vr;  // r <- hn
          const Vec o = Vec::loadu(go.data() + d);
          const Vec dh = o * Vec::loadu(scale1.data() + d);
          hn.store(r.data() + d);
          dh.store(dhn.data() + d);
          (Vec::loadu(dshift + d) + o).store(dshift + d);
          at::vec::fmadd(o, hn, Vec::loadu(dscale + d)).store(dscale + d);
          a1 = a1 + dh;
          a2 = at::vec::fmadd(dh, hn, a2);
        }
        float s1 = at::vec::vec_reduce_all<float>([](Vec& a, Vec& e) { return a + e; }, a1);
        float s2 = at::vec::vec_reduce_all<float>([](Vec& a, Vec& e) { return a + e; }, a2);
        for (; d < D; ++d) {
          r[d] = (r[d] - mean) * rstd;
          dhn[d] = go[d] * scale1[d];
          dshift[d] += go[d];
          dscale[d] += go[d] * r[d];
          s1 += dhn[d];
          s2 += dhn[d] * r[d];
        }
        const float m1 = s1 / D, m2 = s2 / D;
        // dr = rstd * (dhn - mean(dhn) - hn * mean(dhn * hn)) + grad_r
        d = 0;
        const Vec vm1(m1), vm2(m2);
        for (; d + Vec::size() <= D; d += Vec::size())
          ((Vec::loadu(dhn.data() + d) - vm1 - Vec::loadu(r.data() + d) * vm2) * vr).store(dr.data() + d);
        for (; d < D; ++d) dr[d] = (dhn[d] - m1 - r[d] * m2) * rstd;
        if (p.grad_r) {
          cpu::to_float(static_cast<const T*>(p.grad_r) + rowi * D, go.data(), D);
          for (d = 0; d < D; ++d) dr[d] += go[d];
        }
        cpu::from_float(dr.data(), static_cast<T*>(p.dx) + rowi * D, D);
        if (res) {
          cpu::to_float(static_cast<const T*>(p.y) + b * p.y_s[0] + m * p.y_s[1] + n * p.y_s[2], y.data(), D);
          for (d = 0; d < D; ++d) {
            dgate[d] += dr[d] * y[d];
            y[d] = gate[d] * dr[d];
          }
          cpu::from_float(y.data(), static_cast<T*>(p.dy) + rowi * D, D);
        }
      }
    }
  });
  // reduce the per-chunk partials of each (b, m) group
  at::parallel_for(0, c.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      float* dst = p.dmod + g * 3 * D;
      for (int64_t k = 0; k < c.per_group; ++k) cpu::axpy(1.f, partial.data() + (g * c.per_group + k) * 3 * D, dst, 3 * D);
    }
  });
}

}  // namespace

void adaln_fwd_cpu(const AdaLNParams& p) {
  if (p.dtype == DType::BFloat16)
    fwd_impl<cpu::BF16>(p);
  else
    fwd_impl<float>(p);
}

void adaln_bwd_cpu(const AdaLNParams& p) {
  if (p.dtype == DType::BFloat16)
    bwd_impl<cpu::BF16>(p);
  else
    bwd_impl<float>(p);
}

}  // namespace dit_video
