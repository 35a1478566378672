#include "absl/strings/str_cat.h"
#include "runtime/comm/cuda_reduce.h"

namespace trireme {
namespace {

constexpr int kThreads = 256;

struct RankPtrs {
  const void* p[kMaxCudaReduceRanks];
};

__device__ inline int64_t First() {
  return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
}
__device__ inline int64_t Stride() { return static_cast<int64_t>(blockDim.x) * gridDim.x; }

// Floats: every input widened to f32, combined in rank order, rounded once.
// Each element is read and written by one thread, so `out` may alias its
// own input range.
__global__ void ReduceFloatKernel(RankPtrs ins, int n, DType dtype, ReduceOp op, int64_t begin,
                                  int64_t count, void* out) {
  for (int64_t i = First(); i < count; i += Stride()) {
    float acc = LoadAsF32(ins.p[0], dtype, begin + i);
    for (int j = 1; j < n; ++j) acc = CombineF32(acc, LoadAsF32(ins.p[j], dtype, begin + i), op);
    StoreFromF32(out, dtype, i, FinishF32(acc, op, n));
  }
}

template <typename T>
__global__ void ReduceIntKernel(RankPtrs ins, int n, ReduceOp op, int64_t begin, int64_t count,
                                T* out) {
  for (int64_t i = First(); i < count; i += Stride()) {
    int64_t acc = static_cast<const T*>(ins.p[0])[begin + i];
    for (int j = 1; j < n; ++j)
      acc = CombineI64(acc, static_cast<const T*>(ins.p[j])[begin + i], op);
    out[i] = static_cast<T>(acc);
  }
}

__global__ void ConvertKernel(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                              ReduceOp op, int ranks) {
  for (int64_t i = First(); i < n; i += Stride()) {
    StoreFromF32(out, out_dtype, i, FinishF32(LoadAsF32(in, in_dtype, i), op, ranks));
  }
}

int Blocks(int64_t count) {
  const int64_t b = (count + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

absl::Status ReduceRanksCuda(DType dtype, ReduceOp op, const void* const* ins, int n, int64_t begin,
                             int64_t end, void* out, cudaStream_t stream) {
  if (n < 1 || n > kMaxCudaReduceRanks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a CUDA reduction over ", n, " ranks: one launch takes 1 to ", kMaxCudaReduceRanks));
  }
  const int64_t count = end - begin;
  if (count <= 0) return absl::OkStatus();
  RankPtrs p{};
  for (int j = 0; j < n; ++j) p.p[j] = ins[j];
  cudaGetLastError();  // a stale "not ready" from an event poll is not this launch's error
  switch (dtype) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      ReduceFloatKernel<<<Blocks(count), kThreads, 0, stream>>>(p, n, dtype, op, begin, count, out);
      break;
    case DType::kI32:
      ReduceIntKernel<int32_t><<<Blocks(count), kThreads, 0, stream>>>(p, n, op, begin, count,
                                                                       static_cast<int32_t*>(out));
      break;
    case DType::kI64:
      ReduceIntKernel<int64_t><<<Blocks(count), kThreads, 0, stream>>>(p, n, op, begin, count,
                                                                       static_cast<int64_t*>(out));
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("a CUDA reduction of ", DTypeName(dtype), " elements"));
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("ReduceRanksCuda launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

absl::Status ConvertCuda(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                         ReduceOp op, int ranks, cudaStream_t stream) {
  if (!IsFloat(in_dtype) || !IsFloat(out_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("ConvertCuda: ", DTypeName(in_dtype), " to ",
                                                   DTypeName(out_dtype), ": floats only"));
  }
  if (n <= 0) return absl::OkStatus();
  cudaGetLastError();  // a stale "not ready" from an event poll is not this launch's error
  ConvertKernel<<<Blocks(n), kThreads, 0, stream>>>(in, in_dtype, out, out_dtype, n, op, ranks);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("ConvertCuda launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace trireme
