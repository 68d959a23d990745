// The one translation unit that includes torch: op schemas in the `dit_video` namespace, argument
// checks, output allocation, and the CPU / CUDA implementations that hand raw pointers, sizes and
// strides to the torch-free kernels (csrc/cpu/*.cpp, csrc/cuda/*.cu).
//
//   csrc_temporal_attention(q, k, v, mask?, scale) -> (o, lse)
//   csrc_temporal_attention_backward(grad_o, q, k, v, o, lse, mask?, scale) -> (dq, dk, dv)
//   csrc_gated_residual_adaln(x, y, gate, shift, scale, eps) -> (r, out, mean, rstd)
//   csrc_gated_residual_adaln_backward(grad_r?, grad_out, r, y, gate, scale, mean, rstd)
//       -> (dx, dy, dgate, dshift, dscale)
//   csrc_adaln_modulate(x, shift, scale, eps) -> (out, mean, rstd)
//   csrc_adaln_modulate_backward(grad_out, x, scale, mean, rstd) -> (dx, dshift, dscale)
//   csrc_gelu_tanh(x) -> out;  csrc_gelu_tanh_backward(grad, x) -> dx   (CPU only)
//
// The csrc_ prefix keeps these apart from the Triton backend's Python custom ops in the same
// namespace (dit_video::gated_residual_adaln, ...): both backends load in one process.
//
// Autograd and fake (meta) implementations are registered from Python (dit_video/kernels/csrc_ops.py).
#include <Python.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#ifdef DIT_VIDEO_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <tuple>
#include <vector>

#include "dit_ops.h"

// Importable as the Python module dit_video._C (the ops register when the library loads).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "dit_video C++/CUDA ops (torch.ops.dit_video)", -1,
                                   nullptr};
  return PyModule_Create(&def);
}

namespace dit_video {
namespace {

using at::Tensor;

// Large CPU outputs: ask for transparent huge pages on their 2 MiB-aligned interior before the
// kernel's first touch. Each 4 KiB first-touch page fault costs microseconds; on this project's
// machines they were ~30% of the temporal-attention time (THP is "madvise" by default). Advisory
// only: no effect where THP is off or the memory is already mapped.
Tensor advise_huge(Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (t.device().is_cpu() && t.nbytes() >= 2 * kHuge) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + t.nbytes()) & ~(kHuge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return t;
}

// Dense tensor whose dims are laid out in the order of ref's strides (largest outermost); the same
// rule as dit_video/kernels/layout.py:empty_in_layout_of, so fake and real outputs agree.
Tensor empty_in_layout_of(const Tensor& ref) {
  const int64_t nd = ref.dim();
  std::vector<int64_t> order(nd);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (ref.stride(a) != ref.stride(b)) return ref.stride(a) > ref.stride(b);
    return a > b;
  });
  std::vector<int64_t> sizes(nd), inverse(nd);
  for (int64_t i = 0; i < nd; ++i) sizes[i] = ref.size(order[i]);
  for (int64_t i = 0; i < nd; ++i) inverse[order[i]] = i;
  return advise_huge(at::empty(sizes, ref.options())).permute(inverse);
}

DType dtype_of(const Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16,
              "dit_video ops support float32 and bfloat16, got ", t.scalar_type());
  return t.scalar_type() == at::kBFloat16 ? DType::BFloat16 : DType::Float32;
}

Tensor unit_last(const Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// The CUDA kernels move 8-element chunks with 16-byte loads/stores.
void check_cuda_aligned(const Tensor& t, const char* name) {
  const int64_t vec = 16 / t.element_size();
  bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(-1) == 1 && t.size(-1) % 8 == 0;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) ok = ok && (t.size(d) == 1 || t.stride(d) % vec == 0);
  TORCH_CHECK(ok, "dit_video CUDA kernels: ", name, " must be 16-byte aligned with a last dim that is a multiple "
              "of 8 (sizes ", t.sizes(), ", strides ", t.strides(), ")");
}

SeqView seq_view(const Tensor& t) {
  SeqView v;
  v.ptr = t.data_ptr();
  const int64_t nb = t.dim() - 3, pad = kMaxBatchDims - nb;
  for (int64_t d = 0; d < nb; ++d) v.bs[pad + d] = t.stride(d);
  v.ls = t.stride(-3);
  v.hs = t.stride(-2);
  return v;
}

void check_same(const Tensor& a, const Tensor& b, const char* what) {
  TORCH_CHECK(a.sizes() == b.sizes(), "dit_video::temporal_attention: ", what, " shapes differ: ", a.sizes(), " vs ",
              b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.device() == b.device(), "dit_video::temporal_attention: ", what,
              " must share dtype and device");
}

struct AttnArgs {
  AttnParams p;
  Tensor mask;  // keeps the expanded mask alive
};

AttnArgs attn_args(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& mask, double scale) {
  TORCH_CHECK(q.dim() >= 3 && q.dim() - 3 <= kMaxBatchDims, "dit_video::temporal_attention: q must be [..., L, H, D] "
              "with at most ", kMaxBatchDims, " batch dims, got ", q.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have one shape");
  TORCH_CHECK(q.dim() == k.dim() && q.size(-1) == k.size(-1) && q.size(-2) == k.size(-2),
              "dit_video::temporal_attention: q ", q.sizes(), " and k ", k.sizes(), " must share H and D");
  for (int64_t d = 0; d + 3 < q.dim(); ++d)
    TORCH_CHECK(k.size(d) == q.size(d) || k.size(d) == 1, "dit_video::temporal_attention: k/v batch dims ",
                k.sizes(), " must equal or broadcast (size 1) to q's ", q.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "q, k, v must share a dtype");
  AttnArgs a;
  AttnParams& p = a.p;
  p.dtype = dtype_of(q);
  const int64_t nb = q.dim() - 3, pad = kMaxBatchDims - nb;
  for (int64_t d = 0; d < nb; ++d) p.batch[pad + d] = q.size(d);
  p.nbatch = 1;
  for (int d = 0; d < kMaxBatchDims; ++d) p.nbatch *= p.batch[d];
  p.lq = q.size(-3);
  p.lk = k.size(-3);
  p.heads = q.size(-2);
  p.dim = q.size(-1);
  p.scale = static_cast<float>(scale);
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, "key_padding_mask must be bool");
    TORCH_CHECK(mask->size(-1) == p.lk, "key_padding_mask's last dim must be Lk");
    std::vector<int64_t> shape(q.sizes().begin(), q.sizes().begin() + nb);
    shape.push_back(p.lk);
    a.mask = mask->expand(shape);
    p.mask = reinterpret_cast<const uint8_t*>(a.mask.data_ptr());
    for (int64_t d = 0; d < nb; ++d) p.mask_bs[pad + d] = a.mask.stride(d);
    p.mask_ls = a.mask.stride(-1);
  }
  return a;
}

// k/v broadcast over q's batch dims (a text key [B, 1, L, H, D] for every frame): stride-0 views
Tensor expand_to_q(const Tensor& t, const Tensor& q) {
  std::vector<int64_t> shape(q.sizes().begin(), q.sizes().end() - 3);
  shape.insert(shape.end(), t.sizes().end() - 3, t.sizes().end());
  return t.expand(shape);
}

// Gradient of a broadcast k/v: computed per batch element, then summed over the broadcast dims
Tensor reduce_to(const Tensor& full, const Tensor& like) {
  if (full.sizes() == like.sizes()) return full;
  Tensor out = empty_in_layout_of(like);
  out.copy_(full.sum_to_size(like.sizes()));
  return out;
}

std::tuple<Tensor, Tensor> attention_fwd(const Tensor& q_, const Tensor& k_, const Tensor& v_,
                                         const std::optional<Tensor>& mask, double scale, bool cuda) {
  const Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_);
  AttnArgs a = attn_args(q, k, v, mask, scale);
  Tensor o = empty_in_layout_of(q);
  std::vector<int64_t> lse_shape(q.sizes().begin(), q.sizes().end() - 3);
  lse_shape.push_back(a.p.heads);
  lse_shape.push_back(a.p.lq);
  Tensor lse = at::empty(lse_shape, q.options().dtype(at::kFloat));
  const Tensor kx = expand_to_q(k, q), vx = expand_to_q(v, q);
  a.p.q = seq_view(q);
  a.p.k = seq_view(kx);
  a.p.v = seq_view(vx);
  a.p.o = seq_view(o);
  a.p.lse = lse.data_ptr<float>();
  if (a.p.nbatch * a.p.heads * a.p.lq == 0) return {o, lse};
  if (cuda)
    for (const Tensor* t : {&q, &k, &v}) check_cuda_aligned(*t, "q/k/v");
  if (!cuda) {
    temporal_attention_fwd_cpu(a.p);
  } else {
#ifdef DIT_VIDEO_WITH_CUDA
    c10::cuda::CUDAGuard guard(q.device());
    const char* err = temporal_attention_fwd_cuda(a.p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "dit_video::temporal_attention (CUDA): ", err);
#else
    TORCH_CHECK(false, "dit_video._C was built without CUDA");
#endif
  }
  return {o, lse};
}

std::tuple<Tensor, Tensor, Tensor> attention_bwd(const Tensor& grad_o, const Tensor& q_, const Tensor& k_,
                                                 const Tensor& v_, const Tensor& o_, const Tensor& lse,
                                                 const std::optional<Tensor>& mask, double scale, bool cuda) {
  const Tensor q = unit_last(q_), k = unit_last(k_), v = unit_last(v_), o = unit_last(o_), dout = unit_last(grad_o);
  check_same(q, o, "q and o");
  check_same(q, dout, "q and grad_o");
  AttnArgs a = attn_args(q, k, v, mask, scale);
  const Tensor lse_c = lse.contiguous();
  TORCH_CHECK(lse_c.scalar_type() == at::kFloat && lse_c.numel() == a.p.nbatch * a.p.heads * a.p.lq, "bad lse");
  const Tensor kx = expand_to_q(k, q), vx = expand_to_q(v, q);
  const bool bcast = kx.sizes() != k.sizes();
  Tensor dq = empty_in_layout_of(q);
  Tensor dk = bcast ? at::empty(kx.sizes(), k.options()) : empty_in_layout_of(k);
  Tensor dv = bcast ? at::empty(vx.sizes(), v.options()) : empty_in_layout_of(v);
  a.p.q = seq_view(q);
  a.p.k = seq_view(kx);
  a.p.v = seq_view(vx);
  a.p.o = seq_view(o);
  a.p.dout = seq_view(dout);
  a.p.dq = seq_view(dq);
  a.p.dk = seq_view(dk);
  a.p.dv = seq_view(dv);
  a.p.lse = const_cast<float*>(lse_c.data_ptr<float>());
  if (a.p.nbatch * a.p.heads == 0) return {dq, reduce_to(dk.zero_(), k), reduce_to(dv.zero_(), v)};
  if (a.p.lq == 0 || a.p.lk == 0) return {dq.zero_(), reduce_to(dk.zero_(), k), reduce_to(dv.zero_(), v)};
  if (cuda)
    for (const Tensor* t : {&q, &k, &v, &o, &dout}) check_cuda_aligned(*t, "q/k/v/o/grad_o");
  if (!cuda) {
    temporal_attention_bwd_cpu(a.p);
  } else {
#ifdef DIT_VIDEO_WITH_CUDA
    c10::cuda::CUDAGuard guard(q.device());
    const char* err = temporal_attention_bwd_cuda(a.p, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == nullptr, "dit_video::temporal_attention_backward (CUDA): ", err);
#else
    TORCH_CHECK(false, "dit_video._C was built without CUDA");
#endif
  }
  return {dq, reduce_to(dk, k), reduce_to(dv, v)};
}

// ------------------------------------------------------------------------------------------ adaLN
// x [B, ..., D] is viewed as [B, M, N, D] (M = x.size(1) when x has >= 4 dims, else 1); a modulation
// tensor [B, D] or [B, M, D] is made a contiguous [B, M, D] (small).
struct AdaLNShape {
  int64_t B, M, N, D;
};

AdaLNShape adaln_shape(const Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "dit_video adaLN: x must be [B, ..., D], got ", x.sizes());
  AdaLNShape s;
  s.B = x.size(0);
  s.D = x.size(-1);
  s.M = x.dim() >= 4 ? x.size(1) : 1;
  s.N = s.B * s.M * s.D == 0 ? 0 : x.numel() / (s.B * s.M * s.D);
  return s;
}

Tensor as4(const Tensor& t, const AdaLNShape& s) { return unit_last(t).reshape({s.B, s.M, s.N, s.D}); }

Tensor mod3(const Tensor& m, const AdaLNShape& s, const Tensor& x, const char* name) {
  TORCH_CHECK(m.scalar_type() == x.scalar_type() && m.device() == x.device(), "dit_video adaLN: ", name,
              " must share x's dtype and device");
  TORCH_CHECK((m.dim() == 2 && m.size(0) == s.B && m.size(1) == s.D) ||
                  (m.dim() == 3 && x.dim() >= 4 && m.size(0) == s.B && m.size(1) == s.M && m.size(2) == s.D),
              "dit_video adaLN: ", name, " must be [B, D] or [B, T, D] for x ", x.sizes(), ", got ", m.sizes());
  Tensor c = (m.dim() == 2 ? m.unsqueeze(1).expand({s.B, s.M, s.D}) : m).contiguous();
  if (c.is_cuda() && reinterpret_cast<uintptr_t>(c.data_ptr()) % 16) c = c.clone();  // 16-byte loads
  return c;
}

void set_strides(int64_t* dst, const Tensor& t4) {
  for (int d = 0; d < 3; ++d) dst[d] = t4.stride(d);
}

void run_adaln(const AdaLNParams& p, bool bwd, bool cuda, const Tensor& on) {
  if (p.B * p.M * p.N * p.D == 0) return;
  if (!cuda) {
    bwd ? adaln_bwd_cpu(p) : adaln_fwd_cpu(p);
  } else {
#ifdef DIT_VIDEO_WITH_CUDA
    c10::cuda::CUDAGuard guard(on.device());
    auto stream = c10::cuda::getCurrentCUDAStream().stream();
    const char* err = bwd ? adaln_bwd_cuda(p, stream) : adaln_fwd_cuda(p, stream);
    TORCH_CHECK(err == nullptr, "dit_video adaLN (CUDA): ", err);
#else
    (void)on;
    TORCH_CHECK(false, "dit_video._C was built without CUDA");
#endif
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor> adaln_fwd(const Tensor& x, const std::optional<Tensor>& y,
                                                     const std::optional<Tensor>& gate, const Tensor& shift,
                                                     const Tensor& scale, double eps, bool cuda) {
  const AdaLNShape s = adaln_shape(x);
  AdaLNParams p;
  p.dtype = dtype_of(x);
  p.B = s.B, p.M = s.M, p.N = s.N, p.D = s.D;
  p.eps = static_cast<float>(eps);
  const Tensor x4 = as4(x, s);
  p.x = x4.data_ptr();
  set_strides(p.x_s, x4);
  if (cuda && x.numel()) check_cuda_aligned(x4, "x");
  Tensor y4, g3, r;
  if (y.has_value()) {
    TORCH_CHECK(y->sizes() == x.sizes() && y->scalar_type() == x.scalar_type(), "x and y must share shape and dtype");
    y4 = as4(*y, s);
    if (cuda && x.numel()) check_cuda_aligned(y4, "y");
    g3 = mod3(*gate, s, x, "gate");
    p.y = y4.data_ptr();
    set_strides(p.y_s, y4);
    p.gate = g3.data_ptr();
    r = advise_huge(at::empty(x.sizes(), x.options()));
    p.r = r.data_ptr();
  }
  const Tensor sh3 = mod3(shift, s, x, "shift"), sc3 = mod3(scale, s, x, "scale");
  p.shift = sh3.data_ptr();
  p.scale = sc3.data_ptr();
  Tensor out = advise_huge(at::empty(x.sizes(), x.options()));
  Tensor mean = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(at::kFloat));
  Tensor rstd = at::empty(mean.sizes(), mean.options());
  p.out = out.data_ptr();
  p.mean = mean.data_ptr<float>();
  p.rstd = rstd.data_ptr<float>();
  run_adaln(p, false, cuda, x);
  return {r, out, mean, rstd};
}

// dmod fp32 [B, M, 3, D] -> the gradient of a [B, D] or [B, M, D] modulation tensor
Tensor mod_grad(const Tensor& dmod, int k, const Tensor& like) {
  Tensor g = dmod.select(2, k);
  if (like.dim() == 2) return g.sum(1).to(like.scalar_type());
  return g.to(like.scalar_type(), /*non_blocking=*/false, /*copy=*/true).contiguous();  // no aliasing
}

std::vector<Tensor> adaln_bwd(const std::optional<Tensor>& grad_r, const Tensor& grad_out, const Tensor& r,
                              const std::optional<Tensor>& y, const std::optional<Tensor>& gate, const Tensor& scale,
                              const Tensor& mean, const Tensor& rstd, bool cuda) {
  const AdaLNShape s = adaln_shape(r);
  AdaLNParams p;
  p.dtype = dtype_of(r);
  p.B = s.B, p.M = s.M, p.N = s.N, p.D = s.D;
  const Tensor r4 = as4(r, s);
  p.x = r4.data_ptr();
  set_strides(p.x_s, r4);
  if (cuda && r.numel()) check_cuda_aligned(r4, "r");
  const Tensor go = grad_out.contiguous();
  TORCH_CHECK(go.sizes() == r.sizes() && go.scalar_type() == r.scalar_type(), "grad_out must match r");
  p.grad_out = go.data_ptr();
  Tensor gr;
  if (grad_r.has_value() && grad_r->defined()) {
    gr = grad_r->contiguous();
    TORCH_CHECK(gr.sizes() == r.sizes() && gr.scalar_type() == r.scalar_type(), "grad_r must match r");
    p.grad_r = gr.data_ptr();
  }
  const Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  p.mean = const_cast<float*>(mean_c.data_ptr<float>());
  p.rstd = const_cast<float*>(rstd_c.data_ptr<float>());
  const Tensor sc3 = mod3(scale, s, r, "scale");
  p.scale = sc3.data_ptr();
  Tensor y4, g3, dy;
  Tensor dx = advise_huge(at::empty(r.sizes(), r.options()));
  p.dx = dx.data_ptr();
  if (y.has_value()) {
    y4 = as4(*y, s);
    if (cuda && r.numel()) check_cuda_aligned(y4, "y");
    g3 = mod3(*gate, s, r, "gate");
    p.y = y4.data_ptr();
    set_strides(p.y_s, y4);
    p.gate = g3.data_ptr();
    dy = advise_huge(at::empty(r.sizes(), r.options()));
    p.dy = dy.data_ptr();
  }
  Tensor dmod = at::zeros({s.B, s.M, 3, s.D}, r.options().dtype(at::kFloat));
  p.dmod = dmod.data_ptr<float>();
  run_adaln(p, true, cuda, r);
  if (y.has_value()) return {dx, dy, mod_grad(dmod, 0, *gate), mod_grad(dmod, 1, scale), mod_grad(dmod, 2, scale)};
  return {dx, mod_grad(dmod, 1, scale), mod_grad(dmod, 2, scale)};
}

// --------------------------------------------------------------------------- GELU (CPU)
GeluParams gelu_params(const Tensor& x, const Tensor& out) {
  TORCH_CHECK(x.device().is_cpu(), "dit_video::csrc_gelu_tanh is a CPU kernel, got a ", x.device(), " tensor");
  TORCH_CHECK(x.is_contiguous(), "dit_video::csrc_gelu_tanh needs a contiguous tensor (sizes ", x.sizes(),
              ", strides ", x.strides(), ")");
  GeluParams p;
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.n = x.numel();
  p.dtype = dtype_of(x);
  return p;
}

Tensor gelu_tanh(const Tensor& x) {
  Tensor out = advise_huge(at::empty(x.sizes(), x.options()));
  gelu_tanh_fwd_cpu(gelu_params(x, out));
  return out;
}

Tensor gelu_tanh_backward(const Tensor& grad, const Tensor& x) {
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(),
              "dit_video::csrc_gelu_tanh_backward: grad ", grad.sizes(), " ", grad.scalar_type(), " must match x ",
              x.sizes(), " ", x.scalar_type());
  const Tensor g = grad.contiguous();
  Tensor dx = advise_huge(at::empty(x.sizes(), x.options()));
  GeluParams p = gelu_params(x, dx);
  p.grad = g.data_ptr();
  gelu_tanh_bwd_cpu(p);
  return dx;
}

// --------------------------------------------------------------------------- per-device entry points
template <bool CUDA>
std::tuple<Tensor, Tensor> temporal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const std::optional<Tensor>& mask, double scale) {
  return attention_fwd(q, k, v, mask, scale, CUDA);
}

template <bool CUDA>
std::tuple<Tensor, Tensor, Tensor> temporal_attention_backward(const Tensor& grad_o, const Tensor& q, const Tensor& k,
                                                               const Tensor& v, const Tensor& o, const Tensor& lse,
                                                               const std::optional<Tensor>& mask, double scale) {
  return attention_bwd(grad_o, q, k, v, o, lse, mask, scale, CUDA);
}

template <bool CUDA>
std::tuple<Tensor, Tensor, Tensor, Tensor> gated_residual_adaln(const Tensor& x, const Tensor& y, const Tensor& gate,
                                                                const Tensor& shift, const Tensor& scale, double eps) {
  return adaln_fwd(x, y, gate, shift, scale, eps, CUDA);
}

template <bool CUDA>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gated_residual_adaln_backward(
    const std::optional<Tensor>& grad_r, const Tensor& grad_out, const Tensor& r, const Tensor& y, const Tensor& gate,
    const Tensor& scale, const Tensor& mean, const Tensor& rstd) {
  auto g = adaln_bwd(grad_r, grad_out, r, y, gate, scale, mean, rstd, CUDA);
  return {g[0], g[1], g[2], g[3], g[4]};
}

template <bool CUDA>
std::tuple<Tensor, Tensor, Tensor> adaln_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale,
                                                  double eps) {
  auto [r, out, mean, rstd] = adaln_fwd(x, std::nullopt, std::nullopt, shift, scale, eps, CUDA);
  return {out, mean, rstd};
}

template <bool CUDA>
std::tuple<Tensor, Tensor, Tensor> adaln_modulate_backward(const Tensor& grad_out, const Tensor& x,
                                                           const Tensor& scale, const Tensor& mean,
                                                           const Tensor& rstd) {
  auto g = adaln_bwd(std::nullopt, grad_out, x, std::nullopt, std::nullopt, scale, mean, rstd, CUDA);
  return {g[0], g[1], g[2]};
}

}  // namespace
}  // namespace dit_video

TORCH_LIBRARY(dit_video, m) {
  m.def("csrc_temporal_attention(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, float scale) "
        "-> (Tensor, Tensor)");
  m.def("csrc_temporal_attention_backward(Tensor grad_o, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, "
        "Tensor? key_padding_mask, float scale) -> (Tensor, Tensor, Tensor)");
  m.def("csrc_gated_residual_adaln(Tensor x, Tensor y, Tensor gate, Tensor shift, Tensor scale, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("csrc_gated_residual_adaln_backward(Tensor? grad_r, Tensor grad_out, Tensor r, Tensor y, Tensor gate, "
        "Tensor scale, Tensor mean, Tensor rstd) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("csrc_adaln_modulate(Tensor x, Tensor shift, Tensor scale, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("csrc_adaln_modulate_backward(Tensor grad_out, Tensor x, Tensor scale, Tensor mean, Tensor rstd) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("csrc_gelu_tanh(Tensor x) -> Tensor");
  m.def("csrc_gelu_tanh_backward(Tensor grad, Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(dit_video, CPU, m) {
  m.impl("csrc_gelu_tanh", &dit_video::gelu_tanh);
  m.impl("csrc_gelu_tanh_backward", &dit_video::gelu_tanh_backward);
}

#define DIT_VIDEO_IMPL(KEY, CUDA)                                                                  \
  TORCH_LIBRARY_IMPL(dit_video, KEY, m) {                                                          \
    m.impl("csrc_temporal_attention", &dit_video::temporal_attention<CUDA>);                            \
    m.impl("csrc_temporal_attention_backward", &dit_video::temporal_attention_backward<CUDA>);          \
    m.impl("csrc_gated_residual_adaln", &dit_video::gated_residual_adaln<CUDA>);                        \
    m.impl("csrc_gated_residual_adaln_backward", &dit_video::gated_residual_adaln_backward<CUDA>);      \
    m.impl("csrc_adaln_modulate", &dit_video::adaln_modulate<CUDA>);                                    \
    m.impl("csrc_adaln_modulate_backward", &dit_video::adaln_modulate_backward<CUDA>);                  \
  }

DIT_VIDEO_IMPL(CPU, false)
#ifdef DIT_VIDEO_WITH_CUDA
DIT_VIDEO_IMPL(CUDA, true)
#endif
