// GEMM on the GPU through cuBLAS (--config=cuda): the same contract as
// kernels/gemm.h (row-major, C = alpha op(A) op(B) + beta C), with A and B in
// f32, bf16 or f16 and accumulation and C in f32 (cublasGemmEx,
// CUBLAS_COMPUTE_32F). Device pointers; enqueued on the handle's stream; does
// not block the host.
#ifndef TRIREME_KERNELS_CUDA_GEMM_H_
#define TRIREME_KERNELS_CUDA_GEMM_H_

#include <cublas_v2.h>

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/core/dtype.h"

namespace trireme::kernels {

absl::Status GemmCuda(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                      int64_t k, float alpha, const void* a, int64_t lda, const void* b,
                      int64_t ldb, DType ab_dtype, float beta, float* c, int64_t ldc);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CUDA_GEMM_H_
