// Per-element math of the model kernels shared by the CPU kernels
// (kernels/cpu/nn.cc) and the CUDA kernels (kernels/cuda/nn.cu).
#ifndef TRIREME_KERNELS_NN_BODY_H_
#define TRIREME_KERNELS_NN_BODY_H_

#include <cmath>

#include "runtime/core/half.h"

namespace trireme::kernels {

// GELU, tanh approximation (GPT-2): 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))).
TRIREME_HD float GeluElement(float v) {
  const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
  return 0.5f * v * (1.0f + tanhf(u));
}

// d GELU / d v.
TRIREME_HD float GeluGradElement(float v) {
  const float c = 0.7978845608028654f, k = 0.044715f;
  const float u = c * (v + k * v * v * v);
  const float t = tanhf(u);
  const float du = c * (1.0f + 3.0f * k * v * v);
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

// One LayerNorm output from the row's mean and reciprocal standard deviation.
TRIREME_HD float LayerNormElement(float x, float mean, float rstd, float gamma, float beta) {
  return (x - mean) * rstd * gamma + beta;
}

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_NN_BODY_H_
