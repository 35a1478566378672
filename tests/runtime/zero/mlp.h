// A small MLP with deliberately uneven shapes, for engine tests:
//   unit "layer1": w1 (7, 15), b1 (15)
//   unit "layer2": w2 (15, 3), b2 (3)
//   unit "head":   w3 (3, 1), b3 (1), gain (1021)
// y = tanh(tanh(x w1 + b1) w2 + b2) w3 + b3 + gain . z,  loss = mean 0.5 (y - t)^2
// Forward and backward are written per unit so they can run between the
// engine's hooks; the single-rank reference runs the same functions.
#ifndef TRIREME_TESTS_RUNTIME_ZERO_MLP_H_
#define TRIREME_TESTS_RUNTIME_ZERO_MLP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/zero/engine.h"

namespace trireme::testing {

inline constexpr int kIn = 7, kH1 = 15, kH2 = 3, kZ = 1021;

std::vector<UnitSpec> MlpUnits();

// Deterministic initial value of every parameter (by name and index).
absl::Status MlpInit(const ParamInfo& info, float* values);

struct Batch {
  int size = 0;
  std::vector<float> x;  // size x kIn
  std::vector<float> z;  // size x kZ
  std::vector<float> t;  // size
};

// Samples [first, first + count) of the global batch of `step`.
Batch MakeBatch(int64_t step, int64_t first, int count);

// Activations of one micro-batch.
struct Acts {
  std::vector<float> h1, h2, y;
  double loss = 0;  // mean over the batch
};

// Per-unit forward / backward. `p` holds the unit's parameters in order;
// backward ADDS into `g` (same layout) the gradient of the batch's mean loss
// (scaled by `loss_scale`) and updates the running upstream gradient `d`.
void Forward(int unit, const std::vector<const float*>& p, const Batch& b, Acts& a);
void Backward(int unit, const std::vector<const float*>& p, const std::vector<float*>& g,
              const Batch& b, const Acts& a, std::vector<float>& d, float loss_scale = 1.0f);

// The single-rank reference: whole global batch, plain vectors, the same
// optimizer functions the engine calls.
class Reference {
 public:
  // `units` defaults to MlpUnits(); frozen parameters (requires_grad false)
  // are neither updated nor counted in the norm.
  explicit Reference(EngineOptions o, int dp, std::vector<UnitSpec> units = MlpUnits());
  // One step over the global batch of `step` (dp * micro_batch * accum samples,
  // split into `accum` micro-batches like the engine's ranks see them).
  void Step(int64_t step, int micro_batch);
  double loss() const { return loss_; }
  // Unit flat spaces, padded like the engine's.
  const std::vector<float>& params(int unit) const { return params_[unit]; }
  const std::vector<float>& grads(int unit) const { return grads_[unit]; }
  double grad_norm() const { return norm_; }
  // The current value of parameter `name`.
  std::vector<float> param(const std::string& name) const;

 private:
  EngineOptions o_;
  int dp_;
  std::vector<UnitSpec> units_;
  std::vector<std::vector<int64_t>> offsets_;  // per unit, per param: unit_offset
  std::vector<std::vector<float>> params_, grads_, m_, v_;
  int64_t opt_step_ = 0;
  double loss_ = 0, norm_ = 0;
};

}  // namespace trireme::testing

namespace trireme::testing {

// One step's micro-batches on an engine rank (any compute / grad dtype; the
// model computes in f32 and scales its loss by e.loss_scale()): rank r,
// micro-batch k takes samples [(k * dp + r) * micro_batch, +micro_batch) of the
// step's global batch. Returns the rank's mean loss over its micro-batches.
absl::StatusOr<double> RunMicroBatches(ZeroEngine& e, int dp_rank, int dp, int64_t step,
                                       int micro_batch);

// The same hook sequence with no arithmetic (any dtype): for memory and
// communication accounting.
absl::Status RunHooksOnly(ZeroEngine& e);

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_RUNTIME_ZERO_MLP_H_
