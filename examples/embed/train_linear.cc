// An embedding example: a tiny trainer with its own model code (not models/)
// that uses only Trireme's public headers. Four ranks as threads fit a
// two-layer regression model with ZeRO-3: parameters, gradients and AdamW
// state sharded, gathered on use, gradients reduce-scattered; then a
// checkpoint, reloaded into a ZeRO-1 engine.
//
//   ./bazelw run //examples/embed:train_linear
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/zero/engine.h"

namespace {

constexpr int kIn = 13, kHidden = 9, kBatch = 16, kRanks = 4, kSteps = 60;

// The trainer's data: y = sin(x . a) with a fixed a, different samples per rank.
void Sample(int step, int rank, std::vector<float>& x, std::vector<float>& y) {
  x.resize(kBatch * kIn);
  y.resize(kBatch);
  for (int s = 0; s < kBatch; ++s) {
    float dot = 0;
    for (int k = 0; k < kIn; ++k) {
      const float v = std::sin(0.37f * (step * 131 + rank * 17 + s * 7 + k * 3));
      x[s * kIn + k] = v;
      dot += v * (k % 3 - 1) * 0.4f;
    }
    y[s] = std::sin(dot);
  }
}

// A fresh directory for the example's checkpoint (the test's, under Bazel).
std::string CheckpointRoot() {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/train_linear_ckpt_" + std::to_string(getpid());
}

absl::Status Train(trireme::Communicator& comm, double* first_loss, double* final_loss) {
  using trireme::ZeroEngine;
  trireme::EngineOptions opts;
  opts.stage = 3;
  opts.optimizer.kind = trireme::OptimizerKind::kAdamW;
  opts.lr.lr = 2e-2f;
  opts.clip_norm = 1.0f;
  std::vector<trireme::UnitSpec> units = {
      {"hidden", {{"w_h", {kIn, kHidden}, true}, {"b_h", {kHidden}, false}}},
      {"out", {{"w_o", {kHidden}, true}, {"b_o", {1}, false}}},
  };
  trireme::MemoryTracker mem("rank");
  ASSIGN_OR_RETURN(auto engine, ZeroEngine::Create(comm, units, opts, &mem));
  RETURN_IF_ERROR(engine->Initialize([](const trireme::ParamInfo& p, float* v) {
    for (int64_t i = 0; i < p.numel; ++i)
      v[i] = p.name[0] == 'b' ? 0.0f : 0.3f * std::sin(i + 1.0f);
    return absl::OkStatus();
  }));
  std::vector<float> x, y, h(kBatch * kHidden), out(kBatch);
  for (int step = 1; step <= kSteps; ++step) {
    Sample(step, comm.rank(), x, y);
    // Forward, one unit at a time: the engine gathers its parameters.
    RETURN_IF_ERROR(engine->PreForward(0));
    {
      ASSIGN_OR_RETURN(auto w, engine->Param(0, 0));
      ASSIGN_OR_RETURN(auto b, engine->Param(0, 1));
      const float* W = static_cast<const float*>(w.data);
      const float* B = static_cast<const float*>(b.data);
      for (int s = 0; s < kBatch; ++s) {
        for (int j = 0; j < kHidden; ++j) {
          float a = B[j];
          for (int k = 0; k < kIn; ++k) a += x[s * kIn + k] * W[k * kHidden + j];
          h[s * kHidden + j] = std::tanh(a);
        }
      }
    }
    RETURN_IF_ERROR(engine->PostForward(0));
    RETURN_IF_ERROR(engine->PreForward(1));
    double loss = 0;
    {
      ASSIGN_OR_RETURN(auto w, engine->Param(1, 0));
      ASSIGN_OR_RETURN(auto b, engine->Param(1, 1));
      const float* W = static_cast<const float*>(w.data);
      for (int s = 0; s < kBatch; ++s) {
        float a = static_cast<const float*>(b.data)[0];
        for (int j = 0; j < kHidden; ++j) a += h[s * kHidden + j] * W[j];
        out[s] = a;
        loss += 0.5 * (a - y[s]) * (a - y[s]) / kBatch;
      }
    }
    RETURN_IF_ERROR(engine->PostForward(1));
    // Backward, in reverse: gradients are added into the engine's buffers.
    std::vector<float> dh(kBatch * kHidden);
    RETURN_IF_ERROR(engine->PreBackward(1));
    {
      ASSIGN_OR_RETURN(auto w, engine->Param(1, 0));
      ASSIGN_OR_RETURN(auto gw, engine->Grad(1, 0));
      ASSIGN_OR_RETURN(auto gb, engine->Grad(1, 1));
      const float* W = static_cast<const float*>(w.data);
      float* GW = static_cast<float*>(gw.data);
      for (int s = 0; s < kBatch; ++s) {
        const float d = (out[s] - y[s]) / kBatch;
        static_cast<float*>(gb.data)[0] += d;
        for (int j = 0; j < kHidden; ++j) {
          GW[j] += h[s * kHidden + j] * d;
          dh[s * kHidden + j] = W[j] * d;
        }
      }
    }
    RETURN_IF_ERROR(engine->PostBackward(1));
    RETURN_IF_ERROR(engine->PreBackward(0));
    {
      ASSIGN_OR_RETURN(auto gw, engine->Grad(0, 0));
      ASSIGN_OR_RETURN(auto gb, engine->Grad(0, 1));
      float* GW = static_cast<float*>(gw.data);
      float* GB = static_cast<float*>(gb.data);
      for (int s = 0; s < kBatch; ++s) {
        for (int j = 0; j < kHidden; ++j) {
          const float hv = h[s * kHidden + j];
          const float d = dh[s * kHidden + j] * (1 - hv * hv);
          GB[j] += d;
          for (int k = 0; k < kIn; ++k) GW[k * kHidden + j] += x[s * kIn + k] * d;
        }
      }
    }
    RETURN_IF_ERROR(engine->PostBackward(0));
    ASSIGN_OR_RETURN(trireme::StepStats st, engine->Step());
    float global = static_cast<float>(loss);
    RETURN_IF_ERROR(comm.AllReduce({&global, 1, trireme::DType::kF32},
                                   {&global, 1, trireme::DType::kF32}, trireme::ReduceOp::kAvg));
    if (comm.rank() == 0 && (step == 1 || step % 10 == 0)) {
      printf("step %3d  loss %.5f  grad norm %.4f  clip %.3f  sent %lld B\n", step, global,
             st.grad_norm, st.clip_coef, static_cast<long long>(st.bytes_sent));
    }
    if (step == 1) *first_loss = global;
    if (step == kSteps) *final_loss = global;
  }
  // Checkpoint and reload onto a differently sharded engine (ZeRO-1): the
  // format is per logical tensor, so the shards need not match.
  const std::string root = CheckpointRoot();
  trireme::checkpoint::SaveOptions save;
  save.root = root;
  ASSIGN_OR_RETURN(
      std::string dir,
      trireme::checkpoint::Save(comm, *engine, trireme::checkpoint::IdentityLayout, kSteps, save));
  opts.stage = 1;
  trireme::MemoryTracker mem2;
  ASSIGN_OR_RETURN(auto reloaded, ZeroEngine::Create(comm, units, opts, &mem2));
  RETURN_IF_ERROR(
      trireme::checkpoint::Load(comm, *reloaded, trireme::checkpoint::IdentityLayout, root)
          .status());
  ASSIGN_OR_RETURN(std::vector<float> before, engine->GatherFull("w_h"));
  ASSIGN_OR_RETURN(std::vector<float> after, reloaded->GatherFull("w_h"));
  if (before != after) return absl::DataLossError("w_h changed through the checkpoint");
  if (comm.rank() == 0) printf("checkpoint %s reloaded at ZeRO-1: w_h identical\n", dir.c_str());

  ASSIGN_OR_RETURN(trireme::ParamInfo info, engine->param_info("w_h"));
  if (comm.rank() == 0) {
    printf(
        "w_h has logical shape [%lld, %lld] (sharded over %d ranks); rank 0 holds %s of "
        "master weights\n",
        static_cast<long long>(info.shape[0]), static_cast<long long>(info.shape[1]), comm.size(),
        trireme::FormatBytes(mem.current(trireme::MemCategory::kMaster)).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int main() {
  std::vector<double> first_loss(kRanks, 0), final_loss(kRanks, 0);
  absl::Status s = trireme::RunOnRanks(kRanks, [&](trireme::Communicator& c) {
    return Train(c, &first_loss[c.rank()], &final_loss[c.rank()]);
  });
  if (!s.ok()) {
    fprintf(stderr, "training failed: %s\n", s.ToString().c_str());
    return 1;
  }
  printf("final loss %.5f (first %.5f)\n", final_loss[0], first_loss[0]);
  return final_loss[0] < 0.1 * first_loss[0] ? 0 : 3;  // the example must actually learn
}
