#include "kernels/cuda/nn.h"

#include "absl/strings/str_cat.h"
#include "kernels/nn_body.h"

namespace trireme::kernels {
namespace {

constexpr int kThreads = 256;

int Blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

__global__ void GeluForwardKernel(const float* x, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    y[i] = GeluElement(x[i]);
  }
}

__global__ void GeluBackwardKernel(const float* x, const float* dy, int64_t n, float* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    dx[i] = dy[i] * GeluGradElement(x[i]);
  }
}

// One block per row: partial sums per thread, a tree in shared memory.
__global__ void LayerNormKernel(const float* x, const float* gamma, const float* beta,
                                int64_t dim, float eps, float* y, float* mean, float* rstd) {
  __shared__ double part[kThreads];
  const float* xr = x + blockIdx.x * dim;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) sum += xr[i];
  part[threadIdx.x] = sum;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  const double mu = part[0] / dim;
  __syncthreads();
  double sq = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) sq += (xr[i] - mu) * (xr[i] - mu);
  part[threadIdx.x] = sq;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  const float m = static_cast<float>(mu);
  const float s = static_cast<float>(1.0 / sqrt(part[0] / dim + static_cast<double>(eps)));
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = s;
  }
  float* yr = y + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    yr[i] = LayerNormElement(xr[i], m, s, gamma[i], beta[i]);
  }
}

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
}

}  // namespace

absl::Status GeluForwardCuda(const float* x, int64_t n, float* y, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  GeluForwardKernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, y);
  return Launched("GeluForwardKernel");
}

absl::Status GeluBackwardCuda(const float* x, const float* dy, int64_t n, float* dx,
                              cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  GeluBackwardKernel<<<Blocks(n), kThreads, 0, stream>>>(x, dy, n, dx);
  return Launched("GeluBackwardKernel");
}

absl::Status LayerNormForwardCuda(const float* x, const float* gamma, const float* beta,
                                  int64_t rows, int64_t dim, float eps, float* y, float* mean,
                                  float* rstd, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return absl::OkStatus();
  LayerNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, gamma, beta, dim, eps,
                                                                        y, mean, rstd);
  return Launched("LayerNormKernel");
}

}  // namespace trireme::kernels
