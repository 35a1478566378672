// A small shared worker pool for the CPU kernels. Splits [0, n) into
// `threads` contiguous chunks whose boundaries are multiples of `align`
// elements, runs fn(begin, end) on each (the first on the calling thread) and
// returns when all are done. Deterministic: the split depends only on n,
// threads and align. Spans shorter than `min_per_thread` per thread use fewer
// threads. Thread-safe; blocks the caller.
#ifndef TRIREME_KERNELS_CPU_PARALLEL_H_
#define TRIREME_KERNELS_CPU_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace trireme::kernels {

void ParallelFor(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn,
                 int64_t align = 16, int64_t min_per_thread = 1 << 16);

}  // namespace trireme::kernels

#endif  // TRIREME_KERNELS_CPU_PARALLEL_H_
