#include "optimizer/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "absl/base/attributes.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/optim.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

// The element arithmetic (and its reproducibility contract: PyTorch's scalar
// fp32 operation order, no FMA) lives in kernels/optim_body.h; the loops,
// AVX2 and threads in kernels/cpu/optim.cc. This file computes the per-step
// scalars the way torch's Python code does: in double from the float inputs,
// rounded to float once where ATen converts a Scalar.

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

namespace {
absl::Status OneBased(const char* who, int64_t step) {
  if (step >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(who, ": step ", step, " < 1 (steps are 1-based)"));
}
}  // namespace

absl::StatusOr<kernels::AdamWScalars> AdamWScalarsFor(const OptimizerConfig& c, int64_t step,
                                                      float lr, bool decay, float grad_scale) {
  RETURN_IF_ERROR(OneBased("AdamW", step));
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

  kernels::AdamWScalars s;
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
  s.small_weight = std::fabs(s.lerp_weight) < 0.5f;
  return s;
}

absl::Status AdamWUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay,
                         float grad_scale, float* p, const float* g, float* m, float* v, int64_t n,
                         kernels::ComputeOut out, int threads) {
  ASSIGN_OR_RETURN(const kernels::AdamWScalars s, AdamWScalarsFor(c, step, lr, decay, grad_scale));
  kernels::AdamW(s, p, g, m, v, n, out, threads);
  return absl::OkStatus();
}

absl::StatusOr<kernels::SgdScalars> SgdScalarsFor(const OptimizerConfig& c, int64_t step, float lr,
                                                  bool decay, float grad_scale) {
  RETURN_IF_ERROR(OneBased("SGD", step));
  kernels::SgdScalars s;
  s.grad_scale = grad_scale;
  s.weight_decay = c.weight_decay;
  s.momentum = c.momentum;
  s.neg_lr = -lr;
  // torch adds the decay term only when weight_decay != 0. With momentum == 0
  // torch keeps no buffer (the update uses g' directly); storing buf = g' is
  // the same update and never reads a possibly stale buffer.
  s.decay = decay && c.weight_decay != 0.0f;
  s.first = step == 1 || c.momentum == 0.0f;
  return s;
}

absl::Status SgdUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay,
                       float grad_scale, float* p, const float* g, float* buf, int64_t n,
                       kernels::ComputeOut out, int threads) {
  ASSIGN_OR_RETURN(const kernels::SgdScalars s, SgdScalarsFor(c, step, lr, decay, grad_scale));
  kernels::Sgd(s, p, g, buf, n, out, threads);
  return absl::OkStatus();
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

LossScaler::LossScaler(Config c)
    : config_(c), scale_(c.initial_scale), hysteresis_left_(c.hysteresis) {}

bool LossScaler::Update(bool found_overflow) {
  if (!config_.dynamic) return found_overflow;
  if (found_overflow) {
    good_steps_ = 0;
    --hysteresis_left_;
    if (hysteresis_left_ <= 0) {
      scale_ = std::max(config_.min_scale, scale_ * config_.backoff_factor);
      hysteresis_left_ = config_.hysteresis;
    }
    return true;
  }
  ++good_steps_;
  // ">=" rather than "==": the same in normal use (the count resets at growth),
  // and it still grows after set_state() with good_steps beyond the interval.
  if (good_steps_ >= config_.growth_interval) {
    // Like torch's _amp_update_scale_: never grow past fp32 range into inf.
    const float grown = scale_ * config_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
    good_steps_ = 0;
    hysteresis_left_ = config_.hysteresis;
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

double SumOfSquares(const float* x, int64_t n) { return kernels::SumOfSquares(x, n); }

bool AllFinite(const float* x, int64_t n) { return kernels::AllFinite(x, n); }

}  // namespace trireme
