// Short-sequence attention in bf16 with bf16 GEMM operands (bf16_gemm.h: oneDNN BRGeMM on AMX, or
// vdpbf16ps on AVX512-BF16), the path temporal_attention.cpp takes for bf16 inputs where one exists. Same tasks, masks
// and recurrences as the fp32-scratch kernel there; what changes is where the precision is:
//   Q, K, V, dO, O are gathered as they are (bf16), S = Q K^T and dP = dO V^T accumulate in fp32, the
//   softmax, lse, delta = rowsum(dO o) and dS = P (dP - delta) are fp32, and P / dS are rounded to
//   bf16 once as the A operand of O = P V, dQ = dS K, dV = P^T dO, dK = dS^T Q (as flash attention
//   does on GPUs and ATen's CPU flash attention does). Outputs are rounded to bf16 from fp32.
#include <cmath>
#include <vector>

#include "attention_tasks.h"
#include "bf16_gemm.h"
#include "small_gemm.h"

namespace dit_video::attn {

using cpu::BF16;

void fwd_bf16(const AttnParams& p, cpu::Bf16Gemm e) {
  const Dims z(p);
  const int64_t qn = z.mq * z.dp, kn = z.nk * z.dp, sn = z.mq * z.nk;
  const int64_t hpt = heads_per_task(p, z, qn + kn + sn);
  for_each_task(
      p, hpt,
      [&](const Task& t, const Task* next, bool prefetch_only) {
        if (next) {
          prefetch<BF16>(p, p.q, *next, z.lq);
          prefetch<BF16>(p, p.k, *next, z.lk);
          prefetch<BF16>(p, p.v, *next, z.lk);
        }
        if (prefetch_only) return;
        thread_local std::vector<BF16> bb;
        thread_local std::vector<float> fb;
        const int64_t nh = t.h1 - t.h0;
        bb.resize(nh * (qn + 2 * kn) + 2 * kn + sn);
        fb.resize(nh * qn + sn + z.nk);
        BF16* q = bb.data();
        BF16* k = q + nh * qn;
        BF16* v = k + nh * kn;
        BF16* kp = v + nh * kn;  // K^T, packed
        BF16* vp = kp + kn;      // V, packed
        BF16* pb = vp + kn;      // P in bf16
        float* o = fb.data();
        float* s = o + nh * qn;
        float* madd = s + sn;
        if (load_mask(p, t.b, z.nk, madd) == 0) {  // fully masked: o = 0, lse = +inf (no gradient)
          std::fill(o, o + nh * qn, 0.f);
          scatter<BF16>(p, p.o, t, z.lq, z.mq, z.dp, o);
          for (int64_t h = t.h0; h < t.h1; ++h)
            std::fill(p.lse + (t.n * p.heads + h) * p.lq, p.lse + (t.n * p.heads + h + 1) * p.lq, kInf);
          return;
        }
        gather_raw<BF16>(p, p.q, t, z.lq, z.mq, z.dp, q);
        gather_raw<BF16>(p, p.k, t, z.lk, z.nk, z.dp, k);
        gather_raw<BF16>(p, p.v, t, z.lk, z.nk, z.dp, v);
        for (int64_t h = t.h0; h < t.h1; ++h) {
          const int64_t hi = h - t.h0;
          float* lse = p.lse + (t.n * p.heads + h) * p.lq;
          cpu::pack_transposed(k + hi * kn, z.dp, z.nk, z.dp, kp);
          cpu::gemm_bf16(e, z.lq, z.nk, z.dp, q + hi * qn, z.dp, kp, s, z.nk);  // S = Q K^T
          for (int64_t i = 0; i < z.lq; ++i) {
            lse[i] = softmax_row(s + i * z.nk, madd, z.nk, p.scale);
            cpu::from_float(s + i * z.nk, pb + i * z.nk, z.nk);
          }
          cpu::pack_rows(v + hi * kn, z.dp, z.nk, z.dp, vp);
          cpu::gemm_bf16(e, z.lq, z.dp, z.nk, pb, z.nk, vp, o + hi * qn, z.dp);  // O = P V
        }
        scatter<BF16>(p, p.o, t, z.lq, z.mq, z.dp, o);
      },
      [e] { cpu::gemm_bf16_done(e); });
}

void bwd_bf16(const AttnParams& p, cpu::Bf16Gemm e) {
  const Dims z(p);
  const int64_t qn = z.mq * z.dp, kn = z.nk * z.dp, sn = z.mq * z.nk;
  const int64_t hpt = heads_per_task(p, z, 3 * qn + 3 * kn + 3 * sn);
  for_each_task(
      p, hpt,
      [&](const Task& t, const Task* next, bool prefetch_only) {
        if (next) {
          prefetch<BF16>(p, p.q, *next, z.lq);
          prefetch<BF16>(p, p.dout, *next, z.lq);
          prefetch<BF16>(p, p.o, *next, z.lq);
          prefetch<BF16>(p, p.k, *next, z.lk);
          prefetch<BF16>(p, p.v, *next, z.lk);
        }
        if (prefetch_only) return;
        thread_local std::vector<BF16> bb;
        thread_local std::vector<float> fb;
        const int64_t nh = t.h1 - t.h0;
        bb.resize(nh * (3 * qn + 2 * kn) + 3 * kn + 2 * qn + 2 * sn);
        fb.resize(nh * (qn + 2 * kn) + 3 * sn + z.nk);
        BF16* q = bb.data();
        BF16* dout = q + nh * qn;
        BF16* o = dout + nh * qn;
        BF16* k = o + nh * qn;
        BF16* v = k + nh * kn;
        BF16* kp = v + nh * kn;  // K^T packed (S), then K packed (dQ)
        BF16* vtp = kp + kn;     // V^T packed (dP)
        BF16* dop = vtp + kn;    // dO packed (dV)
        BF16* qp = dop + qn;     // Q packed (dK)
        BF16* ab = qp + qn;      // A operands: dS, P^T, dS^T in bf16
        BF16* ab2 = ab + sn;
        float* dq = fb.data();
        float* dk = dq + nh * qn;
        float* dv = dk + nh * kn;
        float* s = dv + nh * kn;
        float* dp = s + sn;
        float* tt = dp + sn;  // a transposed [nk, mq] tile
        float* madd = tt + sn;
        load_mask(p, t.b, z.nk, madd);
        gather_raw<BF16>(p, p.q, t, z.lq, z.mq, z.dp, q);
        gather_raw<BF16>(p, p.dout, t, z.lq, z.mq, z.dp, dout);
        gather_raw<BF16>(p, p.o, t, z.lq, z.mq, z.dp, o);
        gather_raw<BF16>(p, p.k, t, z.lk, z.nk, z.dp, k);
        gather_raw<BF16>(p, p.v, t, z.lk, z.nk, z.dp, v);
        for (int64_t h = t.h0; h < t.h1; ++h) {
          const int64_t hi = h - t.h0;
          const float* lse = p.lse + (t.n * p.heads + h) * p.lq;
          const BF16 *qh = q + hi * qn, *doh = dout + hi * qn, *oh = o + hi * qn, *kh = k + hi * kn;
          cpu::pack_transposed(kh, z.dp, z.nk, z.dp, kp);
          cpu::pack_transposed(v + hi * kn, z.dp, z.nk, z.dp, vtp);
          cpu::gemm_bf16(e, z.mq, z.nk, z.dp, qh, z.dp, kp, s, z.nk);    // S = Q K^T
          cpu::gemm_bf16(e, z.mq, z.nk, z.dp, doh, z.dp, vtp, dp, z.nk);  // dP = dO V^T
          probs_and_dscores(p, z, lse, madd, doh, oh, s, dp);
          cpu::from_float(dp, ab, sn);
          cpu::pack_rows(kh, z.dp, z.nk, z.dp, kp);
          cpu::gemm_bf16(e, z.mq, z.dp, z.nk, ab, z.nk, kp, dq + hi * qn, z.dp);  // dQ = dS K
          cpu::transpose(s, z.nk, tt, z.mq, z.mq, z.nk);
          cpu::from_float(tt, ab, sn);
          cpu::transpose(dp, z.nk, tt, z.mq, z.mq, z.nk);
          cpu::from_float(tt, ab2, sn);
          cpu::pack_rows(doh, z.dp, z.mq, z.dp, dop);
          cpu::pack_rows(qh, z.dp, z.mq, z.dp, qp);
          cpu::gemm_bf16(e, z.nk, z.dp, z.mq, ab, z.mq, dop, dv + hi * kn, z.dp);  // dV = P^T dO
          cpu::gemm_bf16(e, z.nk, z.dp, z.mq, ab2, z.mq, qp, dk + hi * kn, z.dp);  // dK = dS^T Q
        }
        scatter<BF16>(p, p.dq, t, z.lq, z.mq, z.dp, dq);
        scatter<BF16>(p, p.dk, t, z.lk, z.nk, z.dp, dk);
        scatter<BF16>(p, p.dv, t, z.lk, z.nk, z.dp, dv);
      },
      [e] { cpu::gemm_bf16_done(e); });
}

}  // namespace dit_video::attn
