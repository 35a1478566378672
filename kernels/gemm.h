// Single-precision GEMM on the CPU through OpenBLAS (cblas_sgemm, row-major):
// the one matrix-multiply interface of the CPU path (cuBLAS on the GPU).
//
// Matrices are fp32, row-major, addressed by raw pointers with a leading
// dimension (the distance in floats between consecutive rows). No ownership.
#ifndef TRIREME_KERNELS_GEMM_H_
#define TRIREME_KERNELS_GEMM_H_

#include <cstdint>

namespace trireme::kernels {

// C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
//   op(A): [m, k], so a is [m, lda] (lda >= k) or, with trans_a, [k, lda] (lda >= m);
//   op(B): [k, n], so b is [k, ldb] (ldb >= n) or, with trans_b, [n, ldb] (ldb >= k);
//   c:     [m, ldc] (ldc >= n). Only the first n columns of each row of C are touched.
// BLAS semantics: with beta == 0, C is not read (NaNs in it do not propagate).
// Zero sizes: m == 0 or n == 0 does nothing (pointers may be null); k == 0
// (empty product) sets C = beta * C without reading a or b. C must not
// overlap A or B.
// Sizes and leading dimensions beyond int32 go through a plain loop (slow,
// correct) since this OpenBLAS build takes 32-bit integers.
// Blocks the calling thread until C is written. OpenBLAS may split the work
// over its own worker threads (SetGemmThreads); safe to call from several
// threads at once.
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Sets the number of threads OpenBLAS uses for every later Gemm in the
// process (process-global; values < 1 mean 1). With ranks running as threads,
// 1 avoids oversubscribing the cores.
void SetGemmThreads(int threads);

// The FLOP/s of an n x n x n Gemm with the current thread setting, measured
// now: one warm-up, then repeats for at least 200 ms (and 3 runs).
double MeasureGemmFlops(int64_t n);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_GEMM_H_
