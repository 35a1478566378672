// What one rank does with ITS shard: AdamW and SGD-momentum updates, learning
// rate schedules, the dynamic loss scaler and the clip coefficient. Operates on
// flat fp32 spans; never calls a collective (the engine reduces across ranks).
// Not thread-safe unless stated; functions with no state are reentrant.
#ifndef TRIREME_OPTIMIZER_OPTIMIZER_H_
#define TRIREME_OPTIMIZER_OPTIMIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/optim.h"

namespace trireme {

enum class OptimizerKind { kAdamW, kSgd };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  float beta1 = 0.9f;         // AdamW
  float beta2 = 0.999f;       // AdamW
  float eps = 1e-8f;          // AdamW
  float momentum = 0.9f;      // SGD
  float weight_decay = 0.0f;  // decoupled for AdamW; added to the gradient for SGD
  // Validates ranges (0 <= beta < 1, eps > 0, weight_decay >= 0, 0 <= momentum < 1);
  // InvalidArgument naming the field and value.
  absl::Status Validate() const;
  // Optimizer-state floats per parameter: 2 (m, v) for AdamW, 1 for SGD.
  int state_per_param() const { return kind == OptimizerKind::kAdamW ? 2 : 1; }
};

// One AdamW step (PyTorch semantics) on n elements, in place:
//   g' = g * grad_scale
//   m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2
//   p = p - lr * weight_decay * p   (only if decay)
//   p = p - lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// step >= 1 is the 1-based step count. p, g, m, v: n fp32 each; g is read only.
// `out` (optional) receives the updated p in the compute dtype in the same
// pass; `threads` splits the span (kernels/optim.h; results do not depend on it).
// InvalidArgument (nothing updated) for step < 1.
absl::Status AdamWUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay,
                         float grad_scale, float* p, const float* g, float* m, float* v, int64_t n,
                         kernels::ComputeOut out = {}, int threads = 1);

// The per-step scalars AdamWUpdate hands to the kernel (for GPU launchers);
// InvalidArgument for step < 1.
absl::StatusOr<kernels::AdamWScalars> AdamWScalarsFor(const OptimizerConfig& c, int64_t step,
                                                      float lr, bool decay, float grad_scale);

// One SGD-with-momentum step (PyTorch semantics) on n elements, in place:
//   g' = g * grad_scale (+ weight_decay * p if decay)
//   buf = g' on the first step (step == 1), else momentum * buf + g'
//   p = p - lr * buf
// InvalidArgument (nothing updated) for step < 1.
absl::Status SgdUpdate(const OptimizerConfig& c, int64_t step, float lr, bool decay,
                       float grad_scale, float* p, const float* g, float* buf, int64_t n,
                       kernels::ComputeOut out = {}, int threads = 1);

// The per-step scalars SgdUpdate hands to the kernel (for stream launchers);
// InvalidArgument for step < 1.
absl::StatusOr<kernels::SgdScalars> SgdScalarsFor(const OptimizerConfig& c, int64_t step, float lr,
                                                  bool decay, float grad_scale);

struct LrSchedule {
  enum class Kind { kConstant, kWarmupCosine };
  Kind kind = Kind::kConstant;
  float lr = 1e-3f;     // peak learning rate
  float min_lr = 0.0f;  // floor of the cosine
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;  // cosine reaches min_lr here and stays there
  // lr > 0, min_lr in [0, lr], warmup_steps >= 0, total_steps >= max(1, warmup_steps).
  absl::Status Validate() const;
  // Learning rate for 1-based `step`: constant: lr. Warmup-cosine: lr * step /
  // warmup_steps while step <= warmup_steps, then min_lr + (lr - min_lr) *
  // 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))), min_lr after total.
  float At(int64_t step) const;
};

// Dynamic loss scaling for fp16 (also usable with a fixed scale).
class LossScaler {
 public:
  struct Config {
    bool dynamic = true;
    float initial_scale = 65536.0f;
    float growth_factor = 2.0f;
    float backoff_factor = 0.5f;
    int growth_interval = 2000;  // consecutive good steps before growing
    int hysteresis = 1;          // overflows tolerated before backing off
    float min_scale = 1.0f;
  };
  explicit LossScaler(Config c);
  float scale() const { return scale_; }
  // Records one step's outcome (overflow agreed across ranks by the caller).
  // Returns true if the step must be skipped (found_overflow).
  bool Update(bool found_overflow);
  // Serializable state, for checkpoints.
  struct State {
    float scale;
    int good_steps;
    int hysteresis_left;
  };
  State state() const { return {scale_, good_steps_, hysteresis_left_}; }
  void set_state(const State& s);

 private:
  Config config_;
  float scale_;
  int good_steps_ = 0;
  int hysteresis_left_;
};

// min(1, max_norm / (total_norm + 1e-6)); 1 when max_norm <= 0 (clipping off)
// or total_norm is not finite.
float ClipCoefficient(double total_norm, float max_norm);

// Sum of squares of n fp32 values, accumulated in double (so the result does
// not depend on how the span is split, up to double rounding).
double SumOfSquares(const float* x, int64_t n);

// True if all n values are finite.
bool AllFinite(const float* x, int64_t n);

}  // namespace trireme

#endif  // TRIREME_OPTIMIZER_OPTIMIZER_H_
