// Per-element bodies of the optimizer kernels, shared by the CPU kernels
// (scalar and AVX2) and the CUDA kernels, so the CPU tests test the GPU
// arithmetic.
//
// Reproducibility contract: each body is the scalar (non-FMA) fp32 operation
// sequence of PyTorch's single-tensor torch.optim.AdamW / SGD, with the
// per-step scalars computed by the caller (optimizer/optimizer.cc) exactly
// where torch rounds them. Every operation is one correctly rounded fp32
// operation, so the AVX2 kernel (which uses the same operations without FMA)
// and the scalar kernel agree bit for bit. Compilers must not contract a*b+c
// into an FMA here: kernels/ builds with -ffp-contract=off and nvcc with
// --fmad=false.
#ifndef TRIREME_KERNELS_OPTIM_BODY_H_
#define TRIREME_KERNELS_OPTIM_BODY_H_

#include <cmath>
#include <cstdint>

#include "runtime/core/half.h"

namespace trireme::kernels {

// Per-step scalars of AdamW, each rounded to float where torch rounds it.
struct AdamWScalars {
  float grad_scale;             // multiplies the gradient (1 / loss scale, clip, 1 / accum)
  float decay_factor;           // float(1 - lr * wd) when decaying, else exactly 1
  float lerp_weight;            // float(1 - beta1)
  float beta2;                  // float(beta2)
  float one_minus_beta2;        // float(1 - beta2)
  float bias_correction2_sqrt;  // float((1 - beta2^step) ** 0.5)
  float eps;                    // float(eps)
  float neg_step_size;          // float(-(lr / (1 - beta1^step)))
  bool small_weight;            // |lerp_weight| < 0.5: torch's lerp form (see below)
};

// at::lerp for fp32 with a scalar weight: self + w * (end - self) when
// |w| < 0.5, else end - (end - self) * (1 - w).
TRIREME_HD float Lerp(float self, float end, float weight, bool small) {
  return small ? self + weight * (end - self) : end - (end - self) * (1.0f - weight);
}

// One AdamW element (torch's _single_tensor_adam, decoupled weight decay):
//   g = g * grad_scale;  p = p * decay_factor;  m = lerp(m, g, 1 - beta1)
//   v = v * beta2;  v = v + ((1 - beta2) * g) * g
//   p = p + ((-step_size) * m) / (sqrt(v) / bc2_sqrt + eps)
TRIREME_HD void AdamWElement(const AdamWScalars& s, float& p, float g, float& m, float& v) {
  g = g * s.grad_scale;
  p = p * s.decay_factor;
  m = Lerp(m, g, s.lerp_weight, s.small_weight);
  v = v * s.beta2;
  v = v + s.one_minus_beta2 * g * g;
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * m / denom;
}

struct SgdScalars {
  float grad_scale;
  float weight_decay;  // used only when decay
  float momentum;
  float neg_lr;  // float(-lr)
  bool decay;    // add weight_decay * p to the gradient
  bool first;    // buf = g (first step, or momentum 0)
};

// One SGD-with-momentum element (torch's _single_tensor_sgd, dampening 0):
//   g = g * grad_scale (+ wd * p);  buf = g | buf * momentum + g;  p = p + (-lr) * buf
TRIREME_HD void SgdElement(const SgdScalars& s, float& p, float g, float& buf) {
  g = g * s.grad_scale;
  if (s.decay) g = g + s.weight_decay * p;
  buf = s.first ? g : buf * s.momentum + g;
  p = p + s.neg_lr * buf;
}

// True if the float's exponent is not all ones (not inf, not NaN).
TRIREME_HD bool IsFiniteBits(float x) { return (F32ToBits(x) & 0x7f800000u) != 0x7f800000u; }

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_OPTIM_BODY_H_
