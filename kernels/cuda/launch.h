// Launch helpers shared by the CUDA launchers (--config=cuda): the block size,
// the grid for a grid-stride loop over n elements, and the launch's status.
#ifndef TRIREME_KERNELS_CUDA_LAUNCH_H_
#define TRIREME_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace trireme::kernels {

inline constexpr int kThreadsPerBlock = 256;

// Blocks for a grid-stride loop over n elements: enough to cover n, at least
// one, at most `cap` (the loop strides over the rest).
inline int GridFor(int64_t n, int64_t cap = 65535) {
  const int64_t b = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<int>(b < cap ? (b > 0 ? b : 1) : cap);
}

// Blocks for a kernel that gives each block one row (or one item) at a time
// and strides over the rest: min(rows, cap), at least one. Row-per-block
// kernels loop `for (row = blockIdx.x; row < rows; row += gridDim.x)`, so any
// int64 row count works and nothing is cast to the grid's 32 bits unchecked.
inline unsigned RowBlocks(int64_t rows, int64_t cap = int64_t{1} << 20) {
  return static_cast<unsigned>(rows < cap ? (rows > 0 ? rows : 1) : cap);
}

// The status of the last kernel launch on this thread, naming `what`.
inline absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
}

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_LAUNCH_H_
