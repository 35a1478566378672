// Memory footprint of the ZeRO engine, measured by its MemoryTracker: for a
// model shape, a stage and a dp, either really (ranks as threads, real
// buffers, real collectives) or simulated (the same engine code on the meta
// device over a simulated communicator: every byte accounted, none
// allocated), so 175B parameters over 1024 ranks run in seconds.
#ifndef TRIREME_BENCH_FOOTPRINT_H_
#define TRIREME_BENCH_FOOTPRINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"
#include "runtime/core/memory.h"
#include "runtime/zero/engine.h"

namespace trireme::bench {

// A decoder of the model library (models/gpt_config.h: its named published
// shapes and a few more), or a bare parameter count (raw_params > 0).
struct ModelShape {
  std::string name;
  GptConfig config;
  int64_t raw_params = 0;  // a bare count, split into 32 equal units
};

// tiny (2 layers, hidden 64, byte vocabulary), the published shapes of
// GptNamedShapes() (gpt2-124m ... gpt2-1.5b, llama-7b, llama-13b,
// llama-70b), 175b (GPT-3: 96 layers, hidden 12288, 96 heads), 7.5b (the ZeRO
// paper's count), or a count such as "3e9" / "350m" / "1.3b".
// InvalidArgument naming the text and the choices otherwise.
absl::StatusOr<ModelShape> ModelByName(const std::string& name);

// The model's engine units at tp = pp = 1 (GptUnits: one per block, the
// embeddings, the final norm and the head); a count: 32 equal units.
std::vector<UnitSpec> UnitsFor(const ModelShape& m);
int64_t ParamCount(const ModelShape& m);

struct FootprintConfig {
  int stage = 3;
  int dp = 1;
  DType compute = DType::kBF16;
  DType grad = DType::kBF16;
  bool simulated = true;
};

struct Footprint {
  MemoryTracker::Snapshot memory;  // rank 0: current after a step, peak over it
  int64_t psi = 0;                 // parameters as stored (with padding)
  int64_t psi_unpadded = 0;
  int64_t sent_per_step = 0;     // rank 0, bytes on the DP group
  double formula = 0;            // ZeRO model-state bytes for psi_unpadded
  int64_t model_states() const;  // param + grad + master + optim, current
};

// ZeRO model-state bytes per rank (the paper's K = 12, with `grad_bytes` for
// gradient storage): 0: (2+g+12)Ψ; 1: (2+g)Ψ + 12Ψ/N; 2: 2Ψ + (g+12)Ψ/N;
// 3: (2+g+12)Ψ/N.
double ZeroFormulaBytes(int stage, double psi, int dp, int grad_bytes);

// Runs one step (after a warm-up step) of the engine with hooks only (the
// model's arithmetic does not change what the engine holds) and reports rank
// 0's tracker. Real mode runs every rank as a thread and checks that all ranks
// hold the same bytes.
absl::StatusOr<Footprint> Measure(const ModelShape& m, const FootprintConfig& c);

}  // namespace trireme::bench

#endif  // TRIREME_BENCH_FOOTPRINT_H_
