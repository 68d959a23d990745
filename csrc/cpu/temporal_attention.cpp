// Short-sequence attention on CPU, read in place from strided [batch..., L, H, D] views (the
// temporal view [B, S, T, H, D] of a fused QKV projection); o written through its own strides.
//
// One task = one (sequence, head). Its rows are gathered (converted to fp32, zero-padded: rows to a
// multiple of 4, columns to the vector width) into a per-thread scratch, and the products are tiny
// register-blocked GEMMs (small_gemm.h): S = Q K^T, P = softmax(S), O = P V. Forward saves o and the
// log-sum-exp; backward recomputes P from them (flash-attention's recurrences):
// dP = dO V^T, dS = P (dP - rowsum(dO o)), dQ = dS K, dK = dS^T Q, dV = P^T dO.
// Fully masked rows: o = 0, lse = +inf, no gradient.
//
// bf16 inputs go to attention_bf16.cpp instead where a bf16 GEMM engine serves them (oneDNN's BRGeMM on AMX
// Xeons, keys > 16; vdpbf16ps on AVX512-BF16 CPUs): bf16 GEMM operands, fp32 softmax (see bf16_gemm_path
// below; bf16_gemm.h for the engines and their measurements).
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../dit_ops.h"
#include "attention_tasks.h"
#include "bf16_gemm.h"
#include "small_gemm.h"
#include "vec_util.h"

namespace dit_video {
namespace {

using namespace attn;

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
        if (i < z.lq)
          lse[i] = softmax_row(s + i * z.nk, madd, z.nk, p.scale);
        else  // padding rows
          std::fill(s + i * z.nk, s + (i + 1) * z.nk, 0.f);
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
      probs_and_dscores(p, z, lse, madd, doh, oh, s, dp);
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

// bf16 inputs take the bf16-GEMM path (attention_bf16.cpp) where an engine exists; on BRGeMM only when the key
// tiles are longer than one 16-wide block: measured on an AMX Xeon (2 threads, H6 D64, fwd / bwd vs this file's
// fp32 scratch): L = 256 0.49x / 0.46x, 128 0.65x / 0.56x, 64 0.62x / 0.59x, 32 0.82x / 0.75x, but at
// L = 16 1.16-1.33x / 0.82-1.04x: a 16 x 16 x 64 tile is too small to pay for the BRGeMM calls. The
// vdpbf16ps engine has no call overhead: on a Zen 4 EPYC it measured 0.81x fwd+bwd at L = 16 too.
inline cpu::Bf16Gemm bf16_gemm_path(const AttnParams& p) {
  if (p.dtype != DType::BFloat16) return cpu::Bf16Gemm::None;
  const cpu::Bf16Gemm e = cpu::bf16_gemm_engine();
  return e == cpu::Bf16Gemm::Brgemm && p.lk <= 16 ? cpu::Bf16Gemm::None : e;
}

}  // namespace

void temporal_attention_fwd_cpu(const AttnParams& p) {
  if (const auto e = bf16_gemm_path(p); e != cpu::Bf16Gemm::None)
    attn::fwd_bf16(p, e);  // attention_bf16.cpp: bf16 GEMM operands (AMX)
  else if (p.dtype == DType::BFloat16)
    fwd_impl<cpu::BF16>(p);
  else
    fwd_impl<float>(p);
}

void temporal_attention_bwd_cpu(const AttnParams& p) {
  if (const auto e = bf16_gemm_path(p); e != cpu::Bf16Gemm::None)
    attn::bwd_bf16(p, e);
  else if (p.dtype == DType::BFloat16)
    bwd_impl<cpu::BF16>(p);
  else
    bwd_impl<float>(p);
}

}  // namespace dit_video
