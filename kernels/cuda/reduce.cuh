// Block-wide reductions for the CUDA kernels (--config=cuda, nvcc only).
#ifndef TRIREME_KERNELS_CUDA_REDUCE_CUH_
#define TRIREME_KERNELS_CUDA_REDUCE_CUH_

#include "kernels/cuda/launch.h"

namespace trireme::kernels {

// A reduction over the kThreadsPerBlock threads of a block through shared
// memory; every thread gets the result. The tree's order is fixed, so results
// are deterministic. Every thread of the block must call it.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op) {
  __shared__ T part[kThreadsPerBlock];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int w = kThreadsPerBlock / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) part[threadIdx.x] = op(part[threadIdx.x], part[threadIdx.x + w]);
    __syncthreads();
  }
  const T r = part[0];
  __syncthreads();
  return r;
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};

// Grid-stride loop index helpers.
__device__ inline int64_t GlobalThread() {
  return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
}
__device__ inline int64_t GridThreads() { return static_cast<int64_t>(blockDim.x) * gridDim.x; }

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_REDUCE_CUH_
