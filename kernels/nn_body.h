// Per-element math of the model kernels shared by the CPU kernels
// (kernels/cpu/nn.cc) and the CUDA kernels (kernels/cuda/nn.cu).
#ifndef TRIREME_KERNELS_NN_BODY_H_
#define TRIREME_KERNELS_NN_BODY_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/core/half.h"

namespace trireme::kernels {

// Constants of ExpSmall and TanhElement (the AVX2 path in kernels/cpu/nn.cc
// repeats the same operations on 8 lanes with these values).
namespace nn_const {
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;  // ln 2 = kLn2Hi + kLn2Lo; kLn2Hi exact in 9 bits
inline constexpr float kLn2Lo = -2.12194440e-4f;
// Taylor coefficients 1/k!, k = 7..2, of exp on [-ln2/2, ln2/2].
inline constexpr float kC7 = 1.98412698e-4f, kC6 = 1.38888889e-3f, kC5 = 8.33333333e-3f,
                       kC4 = 4.16666667e-2f, kC3 = 1.66666667e-1f, kC2 = 0.5f;
inline constexpr float kTanhClamp = 10.0f;     // 1 - 2 / (exp(20) + 1) rounds to 1 in f32
inline constexpr float kSigmoidClamp = 80.0f;  // ExpSmall(80) = 5.5e34: far from overflow
}  // namespace nn_const

// exp(x) for x in [0, 80] (the exponent n <= 116 stays a normal float's) from +, -, *, floor and an
// exponent-bit scale only, so the scalar, AVX2 and CUDA paths agree bitwise (with FMA contraction
// off): x = n ln2 + r, exp(r) by a degree-7 polynomial (relative error < 1e-7).
TRIREME_HD float ExpSmall(float x) {
  using namespace nn_const;
  const float n = floorf(x * kLog2e + 0.5f);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kC7;
  p = p * r + kC6;
  p = p * r + kC5;
  p = p * r + kC4;
  p = p * r + kC3;
  p = p * r + kC2;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(u) = sign(u) (1 - 2 / (exp(2 |u|) + 1)), |u| clamped to 10 (where it
// rounds to 1); absolute error below 2e-7 (the GELU adds it to 1, so that is
// what matters). NaN in, NaN out.
TRIREME_HD float TanhElement(float u) {
  if (u != u) return u;
  float a = fabsf(u);
  a = a > nn_const::kTanhClamp ? nn_const::kTanhClamp : a;
  const float t = 1.0f - 2.0f / (ExpSmall(2.0f * a) + 1.0f);
  return u < 0.0f ? -t : t;
}

// GELU, tanh approximation (GPT-2): 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))).
TRIREME_HD float GeluElement(float v) {
  const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
  return 0.5f * v * (1.0f + TanhElement(u));
}

// d GELU / d v.
TRIREME_HD float GeluGradElement(float v) {
  const float c = 0.7978845608028654f, k = 0.044715f;
  const float u = c * (v + k * v * v * v);
  const float t = TanhElement(u);
  const float du = c * (1.0f + 3.0f * k * v * v);
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

// One LayerNorm output from the row's mean and reciprocal standard deviation.
TRIREME_HD float LayerNormElement(float x, float mean, float rstd, float gamma, float beta) {
  return (x - mean) * rstd * gamma + beta;
}

// One LayerNorm input gradient: rstd * (g - mean(g) - xhat * mean(g xhat))
// with g = dy * gamma (the row means come from the caller).
TRIREME_HD float LayerNormGradElement(float dy, float gamma, float xhat, float mean_g,
                                      float mean_g_xhat, float rstd) {
  return rstd * (dy * gamma - mean_g - xhat * mean_g_xhat);
}

// One RMSNorm output from the row's reciprocal root mean square.
TRIREME_HD float RmsNormElement(float x, float rstd, float gamma) { return x * rstd * gamma; }

// One RMSNorm input gradient: rstd * (g - xhat * mean(g xhat)), g = dy * gamma
// (the LayerNorm gradient with mean(g) = 0; the row mean from the caller).
TRIREME_HD float RmsNormGradElement(float dy, float gamma, float xhat, float mean_g_xhat,
                                    float rstd) {
  return LayerNormGradElement(dy, gamma, xhat, 0.0f, mean_g_xhat, rstd);
}

// sigmoid(g) from e = exp(min(|g|, 80)) (ExpSmall): e / (e + 1) for g >= 0,
// 1 / (e + 1) below (sigmoid(-80) = 1.8e-35, past which the clamp leaves it).
// NaN in, NaN out. The AVX2 path repeats these operations.
TRIREME_HD float SigmoidElement(float g) {
  if (g != g) return g;
  float a = fabsf(g);
  a = a > nn_const::kSigmoidClamp ? nn_const::kSigmoidClamp : a;
  const float e = ExpSmall(a);
  const float inv = 1.0f / (e + 1.0f);
  return g < 0.0f ? inv : e * inv;
}

// SiLU (swish): g * sigmoid(g).
TRIREME_HD float SiluElement(float g) { return g * SigmoidElement(g); }

// One SwiGLU output: silu(gate) * up.
TRIREME_HD float SwiGluElement(float gate, float up) { return SiluElement(gate) * up; }

// One SwiGLU gradient: *dgate = dy * up * silu'(gate), *dup = dy * silu(gate),
// with silu' = sigmoid + silu (1 - sigmoid). Reads every input before writing.
TRIREME_HD void SwiGluGradElement(float gate, float up, float dy, float* dgate, float* dup) {
  const float sig = SigmoidElement(gate);
  const float silu = gate * sig;
  const float dsilu = sig + silu * (1.0f - sig);
  *dgate = dy * up * dsilu;
  *dup = dy * silu;
}

// Rotary embedding: the cosine and sine of the angle pos * base^(-2i /
// head_dim) of pair i, all in double; the sine negated for the inverse.
TRIREME_HD void RotaryCosSin(int64_t pos, int64_t i, int64_t head_dim, float base, bool inverse,
                             double* c, double* s) {
  const double theta =
      pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  const double angle = static_cast<double>(pos) * theta;
  *c = cos(angle);
  *s = inverse ? -sin(angle) : sin(angle);
}

// Rotates the pair (*x0, *x1) by the angle of cosine c and sine s, in double:
// (x0 c - x1 s, x0 s + x1 c), each rounded once to f32.
TRIREME_HD void RotatePair(float* x0, float* x1, double c, double s) {
  const double a = *x0, b = *x1;
  *x0 = static_cast<float>(a * c - b * s);
  *x1 = static_cast<float>(a * s + b * c);
}

// The first column of row t of a (sliding-window) causal softmax:
// max(0, t - window + 1); 0 for window <= 0 (plain causal).
TRIREME_HD int64_t AttentionWindowStart(int64_t t, int64_t window) {
  return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}

// One softmax input gradient: p * (dp - sum_j p_j dp_j).
TRIREME_HD float SoftmaxGradElement(float p, float dp, float dot) { return p * (dp - dot); }

// One cross-entropy logit gradient: (softmax - onehot) * g, from the row's
// log-sum-exp; `target` is 1 for the row's target column, else 0.
TRIREME_HD float CrossEntropyGradElement(float logit, float lse, float target, float g) {
  return (expf(logit - lse) - target) * g;
}

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_NN_BODY_H_
