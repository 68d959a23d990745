// Torch-free parameter blocks shared by the CPU (csrc/cpu/*.cpp), CUDA (csrc/cuda/*.cu) kernels and
// the one binding file (csrc/bindings.cpp). Raw pointers, sizes and element strides only.
#pragma once
#include <cstdint>

struct CUstream_st;  // = cudaStream_t, without including CUDA headers here

namespace dit_video {

enum class DType : int { Float32 = 0, BFloat16 = 1 };

constexpr int kMaxBatchDims = 3;

// A [b0, b1, b2, L, H, D] tensor read through element strides; D is unit-stride.
struct SeqView {
  void* ptr = nullptr;
  int64_t bs[kMaxBatchDims] = {0, 0, 0};  // batch strides (padded dims have stride 0)
  int64_t ls = 0;                         // sequence stride
  int64_t hs = 0;                         // head stride
};

// Short-sequence attention over [batch..., L, H, D] views. Forward reads q, k, v (+ mask) and
// writes o and lse; backward reads q, k, v, o, dout, lse (+ mask) and writes dq, dk, dv.
struct AttnParams {
  SeqView q, k, v, o, dout, dq, dk, dv;
  const uint8_t* mask = nullptr;  // bool [batch..., Lk], True = attend; nullptr = none
  int64_t mask_bs[kMaxBatchDims] = {0, 0, 0};
  int64_t mask_ls = 1;
  float* lse = nullptr;  // [nbatch, H, Lq] contiguous, natural log; +inf for fully masked rows
  int64_t batch[kMaxBatchDims] = {1, 1, 1};
  int64_t nbatch = 1;
  int lq = 0, lk = 0, heads = 0, dim = 0;
  float scale = 1.f;
  DType dtype = DType::Float32;
};

// r = x + gate * y; out = LayerNorm(r) * (1 + scale) + shift. x, y: [B, M, N, D] strided (D unit
// stride); gate/shift/scale: [B, M, D] contiguous (broadcast over N); r, out: contiguous;
// mean/rstd: [B*M*N] fp32. y == nullptr: adaln_modulate (r = x, not written).
struct AdaLNParams {
  const void* x = nullptr;
  const void* y = nullptr;
  const void* gate = nullptr;
  const void* shift = nullptr;
  const void* scale = nullptr;
  void* r = nullptr;
  void* out = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
  // backward: grad_r (nullable) and grad_out contiguous [B, M, N, D]; r_saved contiguous (or x
  // through x_s for adaln_modulate); dx, dy contiguous; dmod fp32 [B, M, 3, D] zero-initialised
  // (dgate, dshift, dscale).
  const void* grad_r = nullptr;
  const void* grad_out = nullptr;
  void* dx = nullptr;
  void* dy = nullptr;
  float* dmod = nullptr;
  int64_t B = 0, M = 0, N = 0, D = 0;
  int64_t x_s[3] = {0, 0, 0};  // strides of x (or the saved r) over (b, m, n)
  int64_t y_s[3] = {0, 0, 0};
  float eps = 1e-6f;
  DType dtype = DType::Float32;
};

// GELU (tanh approximation) over n contiguous elements: out = gelu(x), or out = grad * gelu'(x).
struct GeluParams {
  const void* x = nullptr;
  const void* grad = nullptr;  // backward only
  void* out = nullptr;
  int64_t n = 0;
  DType dtype = DType::Float32;
};

// CPU (csrc/cpu/*.cpp; at::vec + at::parallel_for).
void temporal_attention_fwd_cpu(const AttnParams& p);
void temporal_attention_bwd_cpu(const AttnParams& p);
void adaln_fwd_cpu(const AdaLNParams& p);
void adaln_bwd_cpu(const AdaLNParams& p);
void gelu_tanh_fwd_cpu(const GeluParams& p);  // CPU only: on CUDA, ATen's elementwise GELU is memory-bound already
void gelu_tanh_bwd_cpu(const GeluParams& p);

// CUDA (csrc/cuda/*.cu). Return nullptr on success, else the CUDA error string.
const char* temporal_attention_fwd_cuda(const AttnParams& p, CUstream_st* stream);
const char* temporal_attention_bwd_cuda(const AttnParams& p, CUstream_st* stream);
const char* adaln_fwd_cuda(const AdaLNParams& p, CUstream_st* stream);
const char* adaln_bwd_cuda(const AdaLNParams& p, CUstream_st* stream);

// Limits of the CUDA short-sequence attention kernel (checked in Python and in the binding).
constexpr int kCudaMaxSeq = 64;
constexpr int kCudaMaxHeadDim = 128;

}  // namespace dit_video
