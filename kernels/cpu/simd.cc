#include "kernels/cpu/simd.h"

#include <atomic>

namespace trireme::kernels::simd {
namespace {

std::atomic<bool> g_force_scalar{false};
const bool g_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                        __builtin_cpu_supports("f16c");

}  // namespace

bool Enabled() { return g_has_avx2 && !g_force_scalar.load(std::memory_order_relaxed); }

void SetForceScalar(bool scalar) { g_force_scalar = scalar; }

}  // namespace trireme::kernels::simd
