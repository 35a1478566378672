#include "optimizer/optimizer.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "absl/base/attributes.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace trireme {
namespace {

// ---------------------------------------------------------------------------
// Reproducibility contract of the update loops.
//
// The element bodies below reproduce, operation for operation, the scalar
// (non-FMA) fp32 arithmetic of PyTorch's single-tensor (foreach=False,
// fused=False) torch.optim.AdamW / torch.optim.SGD: Python-side scalars are
// computed in double from the float inputs and rounded to float once, exactly
// where ATen converts a Scalar to the tensor dtype; every per-element operation
// is one correctly rounded fp32 operation. Nothing depends on association, so
// results are bitwise identical whether the compiler vectorizes a loop or not
// and whichever loop handles an element -- provided a*b+c is never contracted
// into an FMA. GCC 12 contracts by default in C++ (even with -std=c++17) when
// FMA is available (-mfma, -march=native), so optimizer/BUILD compiles this
// file with -ffp-contract=off; keep that flag. (PyTorch's own AVX2 CPU kernels
// use FMA for lerp / add-with-alpha in their vector bodies but not in their
// scalar tails, so bit-exactness with torch is against its scalar semantics.)
//
// The element bodies are `inline` functions of plain floats so that a future
// vectorized CPU or CUDA kernel can share them (moved to a *_body.h header with
// TRIREME_HD, as kernels/cast_body.h does). nvcc contracts too by default: such
// a kernel needs --fmad=false (or __fadd_rn / __fmul_rn) to give the same bits.
// ---------------------------------------------------------------------------

// at::lerp for fp32 with a scalar weight, `weight` already rounded to float.
// ATen picks the form by |weight| < 0.5 for precision near 1
// (pytorch/pytorch#18871); here the caller picks it once per call (kSmallWeight),
// which keeps the loops free of control flow.
template <bool kSmallWeight>
inline float Lerp(float self, float end, float weight) {
  if (kSmallWeight) return self + weight * (end - self);
  return end - (end - self) * (1.0f - weight);
}

// Per-step scalars of AdamW, each rounded to float where torch rounds it.
struct AdamWScalars {
  float grad_scale;             // multiplies the gradient (e.g. 1 / loss scale)
  float decay_factor;           // float(1 - lr * wd) when decaying, else exactly 1
  float lerp_weight;            // float(1 - beta1)
  float beta2;                  // float(beta2)
  float one_minus_beta2;        // float(1 - beta2)
  float bias_correction2_sqrt;  // float((1 - beta2^step) ** 0.5)
  float eps;                    // float(eps)
  float neg_step_size;          // float(-(lr / (1 - beta1^step)))
};

// One AdamW element, PyTorch's _single_tensor_adam with decoupled weight decay
// (each line one fp32 operation sequence, evaluated left to right):
//   g = g * grad_scale                      (GradScaler's unscale: grad * inv_scale)
//   p = p * decay_factor                    param.mul_(1 - lr * weight_decay)
//   m = m + w * (g - m)      if |w| < 0.5   exp_avg.lerp_(grad, w), w = 1 - beta1
//   m = g - (g - m) * (1 - w)   otherwise
//   v = v * beta2                           exp_avg_sq.mul_(beta2)
//   v = v + ((1 - beta2) * g) * g             .addcmul_(grad, grad, value=1 - beta2)
//   denom = sqrt(v) / bc2_sqrt + eps        (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
//   p = p + ((-step_size) * m) / denom      param.addcdiv_(exp_avg, denom, value=-step_size)
// where, in double: bc1 = 1 - beta1^step, bc2 = 1 - beta2^step,
// step_size = lr / bc1, bc2_sqrt = bc2 ** 0.5.
// NOTE: torch's lerp is mathematically, but not bitwise, beta1 * m + (1 - beta1) * g:
// the two differ by ~1 ulp once m != 0. This body follows torch.
template <bool kSmallWeight>
inline void AdamWElement(const AdamWScalars& s, float& p, float g, float& m, float& v) {
  g = g * s.grad_scale;
  p = p * s.decay_factor;
  m = Lerp<kSmallWeight>(m, g, s.lerp_weight);
  v = v * s.beta2;
  v = v + s.one_minus_beta2 * g * g;
  const float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * m / denom;
}

// Per-step scalars of SGD, each rounded to float where torch rounds it.
struct SgdScalars {
  float grad_scale;
  float weight_decay;  // float(weight_decay); used only when decaying
  float momentum;      // float(momentum)
  float neg_lr;        // float(-lr)
};

// One SGD element, PyTorch's _single_tensor_sgd (dampening 0, nesterov false):
//   g = g * grad_scale
//   g = g + wd * p              if kDecay:   grad.add(param, alpha=weight_decay)
//   buf = g                     if kFirst:   torch.clone(grad)
//   buf = buf * momentum + g    otherwise:   buf.mul_(momentum).add_(grad, alpha=1)
//   p = p + (-lr) * buf                      param.add_(buf, alpha=-lr)
template <bool kDecay, bool kFirst>
inline void SgdElement(const SgdScalars& s, float& p, float g, float& buf) {
  g = g * s.grad_scale;
  if (kDecay) g = g + s.weight_decay * p;
  if (kFirst) {
    buf = g;
  } else {
    buf = buf * s.momentum + g;
  }
  p = p + s.neg_lr * buf;
}

// The loops. Elements are independent, so the result of every element is the
// same whichever loop (or vector lane) computes it. When the spans are disjoint
// (the normal case) the loops use __restrict pointers and a body whose trip
// count is a multiple of kBlock, which GCC's -O2 cost model vectorizes (it
// declines loops that need alias checks or a vector epilogue); the rest is a
// scalar tail. The restrict loops are kept out of line: GCC drops __restrict
// when it inlines them into a caller that sees the plain pointers. Overlapping
// spans fall back to a plain element-by-element loop.
constexpr int64_t kBlock = 8;  // a power of two

// True if the n-float spans starting at the given pointers pairwise do not overlap.
bool Disjoint(std::initializer_list<const float*> spans, int64_t n) {
  const uintptr_t bytes = static_cast<uintptr_t>(n) * sizeof(float);
  for (auto a = spans.begin(); a != spans.end(); ++a) {
    for (auto b = a + 1; b != spans.end(); ++b) {
      const uintptr_t x = reinterpret_cast<uintptr_t>(*a);
      const uintptr_t y = reinterpret_cast<uintptr_t>(*b);
      if ((x < y ? y - x : x - y) < bytes) return false;
    }
  }
  return true;
}

template <bool kSmallWeight>
ABSL_ATTRIBUTE_NOINLINE void AdamWLoop(const AdamWScalars& scalars, float* __restrict p,
                                       const float* __restrict g, float* __restrict m,
                                       float* __restrict v, int64_t n) {
  const AdamWScalars s = scalars;  // a local copy: provably not aliased by the spans
  const int64_t body = n & ~(kBlock - 1);
  for (int64_t i = 0; i < body; ++i) AdamWElement<kSmallWeight>(s, p[i], g[i], m[i], v[i]);
  for (int64_t i = body; i < n; ++i) AdamWElement<kSmallWeight>(s, p[i], g[i], m[i], v[i]);
}

template <bool kSmallWeight>
void AdamWLoopOverlapping(const AdamWScalars& scalars, float* p, const float* g, float* m, float* v,
                          int64_t n) {
  const AdamWScalars s = scalars;
  for (int64_t i = 0; i < n; ++i) AdamWElement<kSmallWeight>(s, p[i], g[i], m[i], v[i]);
}

template <bool kSmallWeight>
void AdamWDispatch(const AdamWScalars& s, float* p, const float* g, float* m, float* v, int64_t n) {
  if (Disjoint({p, g, m, v}, n)) {
    AdamWLoop<kSmallWeight>(s, p, g, m, v, n);
  } else {
    AdamWLoopOverlapping<kSmallWeight>(s, p, g, m, v, n);
  }
}

template <bool kDecay, bool kFirst>
ABSL_ATTRIBUTE_NOINLINE void SgdLoop(const SgdScalars& scalars, float* __restrict p,
                                     const float* __restrict g, float* __restrict buf, int64_t n) {
  const SgdScalars s = scalars;
  const int64_t body = n & ~(kBlock - 1);
  for (int64_t i = 0; i < body; ++i) SgdElement<kDecay, kFirst>(s, p[i], g[i], buf[i]);
  for (int64_t i = body; i < n; ++i) SgdElement<kDecay, kFirst>(s, p[i], g[i], buf[i]);
}

template <bool kDecay, bool kFirst>
void SgdLoopOverlapping(const SgdScalars& scalars, float* p, const float* g, float* buf,
                        int64_t n) {
  const SgdScalars s = scalars;
  for (int64_t i = 0; i < n; ++i) SgdElement<kDecay, kFirst>(s, p[i], g[i], buf[i]);
}

template <bool kDecay, bool kFirst>
void SgdDispatch(const SgdScalars& s, float* p, const float* g, float* buf, int64_t n) {
  if (Disjoint({p, g, buf}, n)) {
    SgdLoop<kDecay, kFirst>(s, p, g, buf, n);
  } else {
    SgdLoopOverlapping<kDecay, kFirst>(s, p, g, buf, n);
  }
}

// Range checks shared by the Validate methods. Written as !(in range) so that
// NaN is rejected too.
absl::Status OutOfRange(const char* field, double value, const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " must be ", expected));
}

bool InUnitInterval(float x) { return x >= 0.0f && x < 1.0f; }  // [0, 1)

}  // namespace

absl::Status OptimizerConfig::Validate() const {
  if (!InUnitInterval(beta1)) return OutOfRange("OptimizerConfig.beta1", beta1, "in [0, 1)");
  if (!InUnitInterval(beta2)) return OutOfRange("OptimizerConfig.beta2", beta2, "in [0, 1)");
  if (!(eps > 0.0f && std::isfinite(eps))) {
    return OutOfRange("OptimizerConfig.eps", eps, "finite and > 0");
  }
  if (!(weight_decay >= 0.0f && std::isfinite(weight_decay))) {
    return OutOfRange("OptimizerConfig.weight_decay", weight_decay, "finite and >= 0");
  }
  if (!InUnitInterval(momentum)) {
    return OutOfRange("OptimizerConfig.momentum", momentum, "in [0, 1)");
  }
  return absl::OkStatus();
}

void AdamWUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay, float grad_scale,
                 float* p, const float* g, float* m, float* v, int64_t n) {
  assert(step >= 1 && "AdamWUpdate: step is 1-based");
  // Python-side scalars of torch's AdamW, in double (Python floats), from the
  // float inputs; rounded to float once where ATen converts the Scalar.
  const double lr_d = lr;
  const double beta1 = c.beta1;
  const double beta2 = c.beta2;
  const double wd = c.weight_decay;
  const double steps = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(beta1, steps);
  const double bias_correction2 = 1.0 - std::pow(beta2, steps);
  const double step_size = lr_d / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);  // Python's bc2 ** 0.5

  AdamWScalars s;
  s.grad_scale = grad_scale;
  // torch skips param.mul_ when weight_decay == 0; multiplying by exactly 1 is
  // the identity on every float (inf and NaN included).
  s.decay_factor = (decay && wd != 0.0) ? static_cast<float>(1.0 - lr_d * wd) : 1.0f;
  s.lerp_weight = static_cast<float>(1.0 - beta1);
  s.beta2 = c.beta2;
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.bias_correction2_sqrt = static_cast<float>(bias_correction2_sqrt);
  s.eps = c.eps;
  s.neg_step_size = static_cast<float>(-step_size);

  if (std::fabs(s.lerp_weight) < 0.5f) {
    AdamWDispatch<true>(s, p, g, m, v, n);
  } else {
    AdamWDispatch<false>(s, p, g, m, v, n);
  }
}

void SgdUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay, float grad_scale,
               float* p, const float* g, float* buf, int64_t n) {
  assert(step >= 1 && "SgdUpdate: step is 1-based");
  SgdScalars s;
  s.grad_scale = grad_scale;
  s.weight_decay = c.weight_decay;
  s.momentum = c.momentum;
  s.neg_lr = -lr;
  // torch adds the decay term only when weight_decay != 0. With momentum == 0
  // torch keeps no buffer (the update uses g' directly); storing buf = g' is
  // the same update and never reads a possibly stale buffer.
  const bool with_decay = decay && c.weight_decay != 0.0f;
  const bool first = step == 1 || c.momentum == 0.0f;
  if (with_decay) {
    if (first) {
      SgdDispatch<true, true>(s, p, g, buf, n);
    } else {
      SgdDispatch<true, false>(s, p, g, buf, n);
    }
  } else {
    if (first) {
      SgdDispatch<false, true>(s, p, g, buf, n);
    } else {
      SgdDispatch<false, false>(s, p, g, buf, n);
    }
  }
}

absl::Status LrSchedule::Validate() const {
  if (!(lr > 0.0f && std::isfinite(lr))) return OutOfRange("LrSchedule.lr", lr, "finite and > 0");
  if (!(min_lr >= 0.0f && min_lr <= lr)) {
    return OutOfRange("LrSchedule.min_lr", min_lr, absl::StrCat("in [0, lr = ", lr, "]").c_str());
  }
  if (warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LrSchedule.warmup_steps = ", warmup_steps, " must be >= 0"));
  }
  if (total_steps < std::max<int64_t>(1, warmup_steps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LrSchedule.total_steps = ", total_steps,
                     " must be >= max(1, warmup_steps = ", warmup_steps, ")"));
  }
  return absl::OkStatus();
}

float LrSchedule::At(int64_t step) const {
  if (kind == Kind::kConstant) return lr;
  // Steps before the first (step < 1) are a caller error; they get the warmup
  // value of step 0 clamped at zero rather than a negative rate.
  const int64_t s = std::max<int64_t>(step, 0);
  if (s <= warmup_steps) {  // warmup_steps > 0 here unless s == 0
    if (warmup_steps == 0) return 0.0f;
    return static_cast<float>(static_cast<double>(lr) * static_cast<double>(s) /
                              static_cast<double>(warmup_steps));
  }
  if (s >= total_steps) return min_lr;  // also covers total_steps == warmup_steps
  const double kPi = 3.14159265358979323846;
  const double progress =
      static_cast<double>(s - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  const double cosine = 0.5 * (1.0 + std::cos(kPi * progress));
  const double min_d = min_lr;
  return static_cast<float>(min_d + (static_cast<double>(lr) - min_d) * cosine);
}

LossScaler::LossScaler(Config c) : c_(c), scale_(c.initial_scale), hysteresis_left_(c.hysteresis) {}

bool LossScaler::Update(bool found_overflow) {
  if (!c_.dynamic) return found_overflow;
  if (found_overflow) {
    good_steps_ = 0;
    --hysteresis_left_;
    if (hysteresis_left_ <= 0) {
      scale_ = std::max(c_.min_scale, scale_ * c_.backoff_factor);
      hysteresis_left_ = c_.hysteresis;
    }
    return true;
  }
  ++good_steps_;
  // ">=" rather than "==": the same in normal use (the count resets at growth),
  // and it still grows after set_state() with good_steps beyond the interval.
  if (good_steps_ >= c_.growth_interval) {
    // Like torch's _amp_update_scale_: never grow past fp32 range into inf.
    const float grown = scale_ * c_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
    good_steps_ = 0;
    hysteresis_left_ = c_.hysteresis;
  }
  return false;
}

void LossScaler::set_state(const State& s) {
  scale_ = s.scale;
  good_steps_ = s.good_steps;
  hysteresis_left_ = s.hysteresis_left;
}

float ClipCoefficient(double total_norm, float max_norm) {
  if (!(max_norm > 0.0f) || !std::isfinite(total_norm)) return 1.0f;
  const double coefficient = static_cast<double>(max_norm) / (total_norm + 1e-6);
  return coefficient < 1.0 ? static_cast<float>(coefficient) : 1.0f;
}

double SumOfSquares(const float* x, int64_t n) {
  // Squares of floats are exact in double (24 + 24 bits <= 53); only the sums
  // round. Four independent accumulators in a fixed order: deterministic for a
  // given (x, n), with instruction-level parallelism.
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      const double d = x[i + k];
      acc[k] += d * d;
    }
  }
  for (; i < n; ++i) {
    const double d = x[i];
    acc[0] += d * d;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

bool AllFinite(const float* x, int64_t n) {
  // Checks the exponent bits (all ones means inf or NaN), which stays correct
  // even under -ffinite-math-only and vectorizes without branches. Scans in
  // blocks so a bad value stops the scan early.
  constexpr uint32_t kExponentMask = 0x7f800000u;
  constexpr int64_t kScanBlock = 1024;
  for (int64_t begin = 0; begin < n; begin += kScanBlock) {
    const int64_t end = std::min(n, begin + kScanBlock);
    bool finite = true;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &x[i], sizeof(bits));
      finite &= (bits & kExponentMask) != kExponentMask;
    }
    if (!finite) return false;
  }
  return true;
}

}  // namespace trireme
