#include "absl/strings/str_cat.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/optim.h"

namespace trireme::kernels {
namespace {

constexpr int kThreads = kThreadsPerBlock;

int BlocksFor(int64_t n) { return GridFor(n, 4096); }

__device__ inline void StoreOut(void* out, DType dtype, int64_t i, float v) {
  if (out != nullptr) StoreFromF32(out, dtype, i, v);
}

// Grid-stride loop; 16-byte vector loads when every span is 16-byte aligned.
__global__ void AdamWKernel(AdamWScalars s, float* p, const float* g, float* m, float* v, int64_t n,
                            void* out, DType od, bool vec4) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  int64_t done = 0;
  if (vec4) {
    const int64_t n4 = n / 4;
    for (int64_t k = tid; k < n4; k += stride) {
      float4 P = reinterpret_cast<float4*>(p)[k], M = reinterpret_cast<float4*>(m)[k];
      float4 V = reinterpret_cast<float4*>(v)[k];
      const float4 G = reinterpret_cast<const float4*>(g)[k];
      AdamWElement(s, P.x, G.x, M.x, V.x);
      AdamWElement(s, P.y, G.y, M.y, V.y);
      AdamWElement(s, P.z, G.z, M.z, V.z);
      AdamWElement(s, P.w, G.w, M.w, V.w);
      reinterpret_cast<float4*>(p)[k] = P;
      reinterpret_cast<float4*>(m)[k] = M;
      reinterpret_cast<float4*>(v)[k] = V;
      StoreOut(out, od, 4 * k, P.x);
      StoreOut(out, od, 4 * k + 1, P.y);
      StoreOut(out, od, 4 * k + 2, P.z);
      StoreOut(out, od, 4 * k + 3, P.w);
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    AdamWElement(s, p[i], g[i], m[i], v[i]);
    StoreOut(out, od, i, p[i]);
  }
}

__global__ void SgdKernel(SgdScalars s, float* p, const float* g, float* buf, int64_t n, void* out,
                          DType od) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    SgdElement(s, p[i], g[i], buf[i]);
    StoreOut(out, od, i, p[i]);
  }
}

constexpr int64_t kSumBlock = 2048;

// A CUDA block per 2048 elements (striding over the 2048-element blocks); a
// fixed tree inside the block.
__global__ void BlockSumSqKernel(const float* x, int64_t n, int64_t blocks, double* partial) {
  __shared__ double lane[kThreads];
  for (int64_t blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
    const int64_t base = blk * kSumBlock;
    double acc = 0;
    for (int64_t i = base + threadIdx.x; i < base + kSumBlock && i < n; i += kThreads) {
      const double d = x[i];
      acc = acc + d * d;
    }
    lane[threadIdx.x] = acc;
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w /= 2) {
      if (threadIdx.x < w) lane[threadIdx.x] = lane[threadIdx.x] + lane[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) partial[blk] = lane[0];
    __syncthreads();  // lane[0] is read before the next block's tree overwrites it
  }
}

__global__ void SumPartialsKernel(const double* partial, int64_t blocks, double* result) {
  double s = 0;
  for (int64_t k = 0; k < blocks; ++k) s = s + partial[k];  // block order
  *result = s;
}

__global__ void UnscaleKernel(float* x, int64_t n, float scale, int* not_finite) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  bool bad = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += stride) {
    x[i] = x[i] * scale;
    bad = bad || !IsFiniteBits(x[i]);
  }
  if (bad) atomicOr(not_finite, 1);
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

absl::Status AdamWCuda(const AdamWScalars& s, float* p, const float* g, float* m, float* v,
                       int64_t n, void* out, DType out_dtype, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  const bool vec4 = Aligned16(p) && Aligned16(g) && Aligned16(m) && Aligned16(v);
  AdamWKernel<<<BlocksFor(n), kThreads, 0, stream>>>(s, p, g, m, v, n, out, out_dtype, vec4);
  return LaunchStatus("AdamWKernel");
}

absl::Status SgdCuda(const SgdScalars& s, float* p, const float* g, float* buf, int64_t n,
                     void* out, DType out_dtype, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  SgdKernel<<<BlocksFor(n), kThreads, 0, stream>>>(s, p, g, buf, n, out, out_dtype);
  return LaunchStatus("SgdKernel");
}

int64_t SumOfSquaresScratch(int64_t n) { return (n + kSumBlock - 1) / kSumBlock; }

absl::Status SumOfSquaresCuda(const float* x, int64_t n, double* scratch, double* result,
                              cudaStream_t stream) {
  const int64_t blocks = SumOfSquaresScratch(n);
  if (blocks > 0) {
    BlockSumSqKernel<<<RowBlocks(blocks), kThreads, 0, stream>>>(x, n, blocks, scratch);
    if (absl::Status s = LaunchStatus("BlockSumSqKernel"); !s.ok()) return s;
  }
  SumPartialsKernel<<<1, 1, 0, stream>>>(scratch, blocks, result);
  return LaunchStatus("SumPartialsKernel");
}

absl::Status UnscaleAndCheckFiniteCuda(float* x, int64_t n, float scale, int* not_finite,
                                       cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  UnscaleKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, scale, not_finite);
  return LaunchStatus("UnscaleKernel");
}

}  // namespace trireme::kernels
