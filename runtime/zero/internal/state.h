// Private: the engine's per-space and per-unit state, shared by engine.cc,
// engine_reduce.cc and engine_step.cc. Every state is an enum whose
// transitions go through one checked function.
#ifndef TRIREME_RUNTIME_ZERO_INTERNAL_STATE_H_
#define TRIREME_RUNTIME_ZERO_INTERNAL_STATE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "runtime/zero/engine.h"

namespace trireme {

// A unit's place in its forward / backward.
enum class UnitState { kIdle, kForward, kForwardDone, kBackward };
const char* UnitStateName(UnitState s);

// Where a space's compute copy is, for this rank.
//   kFull       stages 0-2: always the whole flat space
//   kSharded    stage 3: only the shard (the gathered buffer is gone)
//   kGathering  stage 3: an all-gather into `gathered` is enqueued
//   kGathered   stage 3: the compute stream waits for it; units may use it
enum class Residency { kFull, kSharded, kGathering, kGathered };
const char* ResidencyName(Residency r);

// The space's gradient within a step.
//   kIdle          no full gradient is held (the grad buffer may hold
//                  reduced values: shard_has_data)
//   kAccumulating  a full gradient receives backward contributions
//   kReducing      its reduction is enqueued and not yet finished
enum class GradState { kIdle, kAccumulating, kReducing };
const char* GradStateName(GradState g);

// One flat space: a set of parameters laid end to end, padded to a multiple
// of dp, each rank owning one shard.
struct ZeroEngine::Space {
  std::string name;
  bool trainable = true;
  bool tied = false;  // used by more than one unit: reduced at Step()
  struct Slot {
    std::string name;
    Range range;  // in this space
    bool weight_decay = true;
    bool in_norm = true;  // not a norm_duplicate
    bool replicated_over_tp = true;
  };
  std::vector<Slot> slots;
  int64_t numel = 0;      // unpadded
  int64_t padded = 0;     // multiple of dp
  int64_t shard = 0;      // padded / dp
  Range shard_range;      // space offsets
  Range master_range;     // shard_range, or all of it in stage 0
  Range compute_range;    // what `param` holds: all of it, or the shard (stage 3)
  int64_t grad_base = 0;  // space offset of grad[0]: 0 (full) or shard_range.begin

  // Compute copy (compute dtype): full (stages 0-2) or shard (3).
  Buffer param;
  Residency residency = Residency::kFull;
  Buffer gathered;                      // stage 3: the full compute copy while gathered
  std::unique_ptr<Event> gather_event;  // on the gather stream
  int in_use = 0;                       // units currently using the gathered copy

  // Gradient (grad dtype): full (stages 0-1) or shard (2-3).
  Buffer grad;
  GradState grad_state = GradState::kIdle;
  bool shard_has_data = false;  // a reduced micro-batch is in `grad` already
  int micro = 0;                // owner PostBackward calls this step
  Buffer grad_full;             // stages 2-3: the full gradient while accumulating
  // The reduction in flight (until finished): its input in the reduce dtype
  // (if it differs from the grad dtype), and its output when it is added
  // into, or cast into, `grad`.
  Buffer reduce_in, reduce_out;

  Buffer master, m, v;  // fp32, master_range

  // Checked transitions: Internal (a broken engine invariant) naming the
  // space and both states otherwise.
  absl::Status SetResidency(Residency to);
  absl::Status SetGradState(GradState to);
};

struct ZeroEngine::Unit {
  std::string name;
  std::vector<ParamInfo> params;
  std::vector<int> param_space;  // per param: the space holding it
  std::vector<int> spaces;       // every space this unit uses (gathered together)
  int trainable_space = -1;      // this unit's own trainable space, if any
  UnitState state = UnitState::kIdle;
};

// The address of element `elem` of a buffer of dtype `d`.
inline char* ElemPtr(const Buffer& b, int64_t elem, DType d) {
  return b.data() == nullptr ? nullptr : static_cast<char*>(b.data()) + elem * DTypeSize(d);
}

}  // namespace trireme

#endif  // TRIREME_RUNTIME_ZERO_INTERNAL_STATE_H_
