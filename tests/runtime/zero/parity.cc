#include "tests/runtime/zero/parity.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"
#include "tests/runtime/zero/mlp.h"

namespace trireme::testing {

// Tolerance in f32, normwise: ||got - want|| <= rtol * ||want||. The
// reference averages its virtual ranks' gradients in rank order, as the
// threads backend does, so parameters usually match bitwise; the grad norm is
// summed in another order (per shard, then across ranks), and the mpi
// backend's reduction order is its own.
absl::Status Compare(const std::string& what, const float* got, const float* want, int64_t n,
                     double rtol) {
  double err2 = 0, ref2 = 0, worst = 0;
  int64_t worst_i = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = static_cast<double>(got[i]) - want[i];
    err2 += e * e;
    ref2 += static_cast<double>(want[i]) * want[i];
    if (std::abs(e) > worst) {
      worst = std::abs(e);
      worst_i = i;
    }
  }
  if (std::sqrt(err2) > rtol * std::sqrt(ref2) || std::isnan(err2)) {
    return absl::InternalError(absl::StrCat(what, ": relative error ", std::sqrt(err2 / ref2),
                                            " > ", rtol, "; worst element ", worst_i, ": got ",
                                            got[worst_i], ", reference ", want[worst_i]));
  }
  return absl::OkStatus();
}

Expected RunReference(const EngineOptions& o, int dp) {
  Reference ref(o, dp);
  Expected e;
  for (int s = 1; s <= kSteps; ++s) {
    ref.Step(s, kMicroBatch);
    e.loss.push_back(ref.loss());
    e.norm.push_back(ref.grad_norm());
    e.grads.emplace_back();
    e.params.emplace_back();
    for (int u = 0; u < 3; ++u) {
      e.grads.back().push_back(ref.grads(u));
      e.params.back().push_back(ref.params(u));
    }
  }
  return e;
}

absl::Status TrainAndCompare(Communicator& c, const EngineOptions& o, const Expected& want,
                             double rtol) {
  MemoryTracker mem;
  ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(c, MlpUnits(), o, &mem));
  RETURN_IF_ERROR(e->Initialize(MlpInit));
  for (int s = 1; s <= kSteps; ++s) {
    const std::string at =
        absl::StrCat("stage ", o.stage, " dp ", c.size(), " rank ", c.rank(), " step ", s);
    ASSIGN_OR_RETURN(double local, RunMicroBatches(*e, c.rank(), c.size(), s, kMicroBatch));
    float loss = static_cast<float>(local);
    RETURN_IF_ERROR(c.AllReduce({&loss, 1, DType::kF32}, {&loss, 1, DType::kF32}, ReduceOp::kAvg));
    const float want_loss = static_cast<float>(want.loss[s - 1]);
    RETURN_IF_ERROR(Compare(at + " loss", &loss, &want_loss, 1, rtol));
    RETURN_IF_ERROR(e->ReduceGradients());
    for (int u = 0; u < e->num_units(); ++u) {
      ASSIGN_OR_RETURN(std::vector<float> g, e->GradShard(u));
      const Range r = e->master_range(u);
      RETURN_IF_ERROR(Compare(at + " grad of unit " + e->unit_name(u), g.data(),
                              want.grads[s - 1][u].data() + r.begin, r.size(), rtol));
    }
    ASSIGN_OR_RETURN(StepStats st, e->Step());
    RETURN_IF_ERROR(e->Synchronize());  // master_data is read on the host
    const float norm = static_cast<float>(st.grad_norm),
                want_norm = static_cast<float>(want.norm[s - 1]);
    RETURN_IF_ERROR(Compare(at + " grad norm", &norm, &want_norm, 1, rtol));
    for (int u = 0; u < e->num_units(); ++u) {
      const Range r = e->master_range(u);
      RETURN_IF_ERROR(Compare(at + " params of unit " + e->unit_name(u), e->master_data(u),
                              want.params[s - 1][u].data() + r.begin, r.size(), rtol));
    }
  }
  // The full values, gathered, equal the reference too.
  for (const char* name : {"w1", "b3", "gain"}) {
    ASSIGN_OR_RETURN(std::vector<float> full, e->GatherFull(name));
    ASSIGN_OR_RETURN(ParamInfo p, e->param_info(name));
    RETURN_IF_ERROR(Compare(absl::StrCat("GatherFull(", name, ")"), full.data(),
                            want.params.back()[p.unit].data() + p.unit_range.begin, p.numel, rtol));
  }
  return absl::OkStatus();
}

}  // namespace trireme::testing
