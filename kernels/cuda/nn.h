// CUDA launchers of the model's element-wise and row-wise layers
// (--config=cuda), on the element math of kernels/nn_body.h shared with the
// CPU kernels. Device pointers; enqueued on `stream`; do not block the host.
#ifndef TRIREME_KERNELS_CUDA_NN_H_
#define TRIREME_KERNELS_CUDA_NN_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace trireme::kernels {

// y = gelu(x), n elements.
absl::Status GeluForwardCuda(const float* x, int64_t n, float* y, cudaStream_t stream);
// dx = dy * gelu'(x).
absl::Status GeluBackwardCuda(const float* x, const float* dy, int64_t n, float* dx,
                              cudaStream_t stream);
// LayerNorm over the last dim: x, y [rows, dim]; gamma, beta [dim]; writes
// mean and rstd [rows] (statistics in double, as the CPU kernel).
absl::Status LayerNormForwardCuda(const float* x, const float* gamma, const float* beta,
                                  int64_t rows, int64_t dim, float eps, float* y, float* mean,
                                  float* rstd, cudaStream_t stream);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_NN_H_
