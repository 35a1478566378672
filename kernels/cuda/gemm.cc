#include "kernels/cuda/gemm.h"

#include "absl/strings/str_cat.h"

namespace trireme::kernels {

absl::Status GemmCuda(cublasHandle_t handle, bool trans_a, bool trans_b, int64_t m, int64_t n,
                      int64_t k, float alpha, const void* a, int64_t lda, const void* b,
                      int64_t ldb, DType ab_dtype, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return absl::OkStatus();
  cudaDataType_t t;
  switch (ab_dtype) {
    case DType::kF32:
      t = CUDA_R_32F;
      break;
    case DType::kBF16:
      t = CUDA_R_16BF;
      break;
    case DType::kF16:
      t = CUDA_R_16F;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("GemmCuda: inputs must be f32, bf16 or f16, not ", DTypeName(ab_dtype)));
  }
  // Row-major C[m, n] is column-major C^T[n, m] = op(B)^T op(A)^T: swap the
  // operands (and m, n) instead of transposing anything.
  // The 64-bit API: no size or leading dimension is truncated to int.
  const cublasStatus_t s =
      cublasGemmEx_64(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                      trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, t, ldb, a, t, lda,
                      &beta, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrCat("cublasGemmEx_64 failed with status ", s, " (m ", m,
                                            ", n ", n, ", k ", k, ")"));
  }
  return absl::OkStatus();
}

}  // namespace trireme::kernels
