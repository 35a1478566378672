// A 2-layer MLP (9 -> 11 tanh -> 3, MSE) trained with ZeRO-3 over the MPI
// processes through Trireme's installed C API, checked against a 1-rank
// reference; its checkpoint is then loaded onto 1 rank with ZeRO-1 and must
// continue identically. Rank 0 prints PASS; the exit code is 1 on any failure.
//
// From the repository root (PREFIX: where Trireme is installed; --ckpt: a
// fresh directory each run, since a committed step is never overwritten):
//   export PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
//   cmake -S examples/cmake_trainer -B /tmp/cmk_build && cmake --build /tmp/cmk_build
//   mpirun --allow-run-as-root -np 2 --oversubscribe --bind-to none --mca btl self,vader
//   /tmp/cmk_build/train --ckpt /tmp/cmk_ckpt
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "trireme/trireme.h"

namespace {

constexpr int IN = 9, HID = 11, OUT = 3, N = 10, STEPS = 15;  // N: the global batch
constexpr int kParams = 4;
const char* const kNames[kParams] = {"w1", "b1", "w2", "b2"};
const int64_t kCount[kParams] = {IN * HID, HID, HID* OUT, OUT};
using Params = std::array<std::vector<float>, kParams>;

int g_rank = 0, g_failures = 0;

// Any failed call ends the process (mpirun then stops the job).
void Must(trireme_status s, const char* call, int line) {
  if (s == TRIREME_OK) return;
  std::fprintf(stderr, "rank %d: train.cc:%d: %s failed: status %d: %s\n", g_rank, line, call,
               static_cast<int>(s), trireme_last_error());
  std::exit(1);
}
#define MUST(call) Must((call), #call, __LINE__)

void Check(bool ok, const std::string& what) {
  if (ok) return;
  std::printf("rank %d: FAIL: %s\n", g_rank, what.c_str());
  ++g_failures;
}

float X(int n, int i) { return static_cast<float>(std::sin(0.7 * n + 1.3 * i)); }
float Y(int n, int o) { return static_cast<float>(0.8 * std::cos(0.5 * n - 0.9 * o)); }

// The same deterministic initial values on every rank: weights ~ 0.5, biases ~ 0.1.
trireme_status Init(const char* name, float* v, int64_t count, void*) {
  const double scale = name[0] == 'w' ? 0.5 : 0.1, seed = name[1] - '0';
  for (int64_t k = 0; k < count; ++k) v[k] = static_cast<float>(scale * std::sin(1.37 * k + seed));
  return TRIREME_OK;
}

// Units "layer1" (w1 [9,11], b1) and "layer2" (w2 [11,3], b2); biases not decayed.
trireme_engine* MakeEngine(trireme_comm* comm, int stage) {
  trireme_units* units = nullptr;
  int l1 = -1, l2 = -1;
  const int64_t w1[2] = {IN, HID}, b1[1] = {HID}, w2[2] = {HID, OUT}, b2[1] = {OUT};
  MUST(trireme_units_create(&units));
  MUST(trireme_units_add_unit(units, "layer1", &l1));
  MUST(trireme_units_add_param(units, l1, "w1", 2, w1, 0));
  MUST(trireme_units_add_param(units, l1, "b1", 1, b1, TRIREME_PARAM_NO_DECAY));
  MUST(trireme_units_add_unit(units, "layer2", &l2));
  MUST(trireme_units_add_param(units, l2, "w2", 2, w2, 0));
  MUST(trireme_units_add_param(units, l2, "b2", 1, b2, TRIREME_PARAM_NO_DECAY));
  trireme_engine_options o;
  trireme_engine_options_init(&o);
  o.stage = stage, o.lr = 0.02f, o.weight_decay = 0.01f;  // AdamW
  trireme_engine* e = nullptr;
  MUST(trireme_engine_create(comm, units, &o, &e));
  MUST(trireme_units_destroy(units));
  return e;
}

float* View(trireme_status (*get)(trireme_engine*, int, int, trireme_view*), trireme_engine* e,
            int unit, int param) {
  trireme_view v;
  trireme_view_init(&v);
  MUST(get(e, unit, param, &v));
  return static_cast<float*>(v.data);
}

// One step: forward over the whole batch (so every rank knows the global
// loss, returned), backward of this rank's mean loss over its contiguous
// slice of N / size samples (the engine averages the ranks' gradients).
double TrainStep(trireme_engine* e, int rank, int size, trireme_step_stats* stats) {
  const int per = N / size, lo = rank * per;
  float h[N][HID], p[N][OUT], dh[N][HID] = {};
  MUST(trireme_engine_pre_forward(e, 0));
  const float *w1 = View(trireme_engine_param, e, 0, 0), *b1 = View(trireme_engine_param, e, 0, 1);
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < HID; ++j) {
      float z = b1[j];
      for (int i = 0; i < IN; ++i) z += X(n, i) * w1[i * HID + j];
      h[n][j] = std::tanh(z);
    }
  MUST(trireme_engine_post_forward(e, 0));
  MUST(trireme_engine_pre_forward(e, 1));
  const float *w2 = View(trireme_engine_param, e, 1, 0), *b2 = View(trireme_engine_param, e, 1, 1);
  double loss = 0;
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OUT; ++o) {
      float z = b2[o];
      for (int j = 0; j < HID; ++j) z += h[n][j] * w2[j * OUT + o];
      p[n][o] = z;
      loss += (z - Y(n, o)) * (z - Y(n, o)) / (N * OUT);
    }
  MUST(trireme_engine_post_forward(e, 1));

  MUST(trireme_engine_pre_backward(e, 1));
  w2 = View(trireme_engine_param, e, 1, 0);
  float *gw2 = View(trireme_engine_grad, e, 1, 0), *gb2 = View(trireme_engine_grad, e, 1, 1);
  for (int n = lo; n < lo + per; ++n)
    for (int o = 0; o < OUT; ++o) {
      const float d = 2 * (p[n][o] - Y(n, o)) / (per * OUT);
      gb2[o] += d;
      for (int j = 0; j < HID; ++j) {
        gw2[j * OUT + o] += h[n][j] * d;
        dh[n][j] += d * w2[j * OUT + o];
      }
    }
  MUST(trireme_engine_post_backward(e, 1));
  MUST(trireme_engine_pre_backward(e, 0));
  float *gw1 = View(trireme_engine_grad, e, 0, 0), *gb1 = View(trireme_engine_grad, e, 0, 1);
  for (int n = lo; n < lo + per; ++n)
    for (int j = 0; j < HID; ++j) {
      const float dz = dh[n][j] * (1 - h[n][j] * h[n][j]);
      gb1[j] += dz;
      for (int i = 0; i < IN; ++i) gw1[i * HID + j] += X(n, i) * dz;
    }
  MUST(trireme_engine_post_backward(e, 0));
  MUST(trireme_engine_step(e, stats));
  return loss;
}

Params Gather(trireme_engine* e) {  // collective
  Params P;
  for (int k = 0; k < kParams; ++k) {
    P[k].resize(kCount[k]);
    MUST(trireme_engine_gather_param(e, kNames[k], P[k].data(), kCount[k]));
  }
  return P;
}

// max over all elements of |a - b| / (1 + |b|) <= tol.
void Compare(const char* what, const Params& a, const Params& b, double tol) {
  double worst = 0;
  for (int k = 0; k < kParams; ++k)
    for (size_t i = 0; i < a[k].size(); ++i)
      worst = std::max(worst, std::fabs(double(a[k][i]) - b[k][i]) / (1 + std::fabs(b[k][i])));
  char buf[200];
  std::snprintf(buf, sizeof(buf), "%s: max |diff|/(1+|x|) = %.3g (tol %.0e)", what, worst, tol);
  Check(worst <= tol, buf);
  if (g_rank == 0 && worst <= tol) std::printf("ok  %s\n", buf);
}

// The reference: the whole batch on 1 thread rank, same init, STEPS + 1 steps.
struct Reference {
  std::vector<double> loss;
  Params at15, at16;
};
trireme_status RunReference(trireme_comm* comm, void* user) {
  auto* r = static_cast<Reference*>(user);
  trireme_engine* e = MakeEngine(comm, 3);
  MUST(trireme_engine_initialize(e, Init, nullptr));
  trireme_step_stats st;
  trireme_step_stats_init(&st);
  for (int s = 0; s < STEPS + 1; ++s) {
    r->loss.push_back(TrainStep(e, 0, 1, &st));
    if (s + 1 == STEPS) r->at15 = Gather(e);
  }
  r->at16 = Gather(e);
  return trireme_engine_destroy(e);
}

// Resharding: the checkpoint onto 1 thread rank with ZeRO-1, then 1 more step.
struct Reshard {
  const char* ckpt;
  int64_t step = -1;
  Params loaded, after;
};
trireme_status RunReshard(trireme_comm* comm, void* user) {
  auto* r = static_cast<Reshard*>(user);
  trireme_engine* e = MakeEngine(comm, 1);
  MUST(trireme_engine_load(e, r->ckpt, nullptr, nullptr, &r->step));
  r->loaded = Gather(e);
  trireme_step_stats st;
  trireme_step_stats_init(&st);
  TrainStep(e, 0, 1, &st);
  r->after = Gather(e);
  return trireme_engine_destroy(e);
}

// Bad use: loading a checkpoint that is not there fails cleanly, naming it.
void BadLoad(trireme_engine* e, const std::string& root) {
  const std::string bad = root + "/no-such-checkpoint";
  const trireme_status s = trireme_engine_load(e, bad.c_str(), nullptr, nullptr, nullptr);
  Check(s == TRIREME_NOT_FOUND, "load of a missing path: status " + std::to_string(s) + ", not 3");
  const std::string msg = trireme_last_error();
  Check(msg.find(bad) != std::string::npos, "the error names the path: " + msg);
  if (g_rank == 0) std::printf("ok  bad load -> status %d: %s\n", static_cast<int>(s), msg.c_str());
}

// The checkpoint read offline must hold step 15, the 4 tensors and w2's master value.
void Offline(const char* ckpt, const Params& final_params) {
  trireme_checkpoint* c = nullptr;
  MUST(trireme_checkpoint_open(ckpt, &c));
  int64_t step = -1;
  int num = -1;
  MUST(trireme_checkpoint_info(c, &step, &num));
  Check(step == STEPS && num == kParams,
        "offline info: step " + std::to_string(step) + ", " + std::to_string(num) + " tensors");
  for (int t = 0; t < num; ++t) {
    const char* name = nullptr;
    int ndim = 0;
    int64_t shape[8] = {};
    MUST(trireme_checkpoint_tensor(c, t, &name, &ndim, shape));
    int64_t count = 1, k = 0;
    for (int d = 0; d < ndim; ++d) count *= shape[d];
    while (k < kParams && std::strcmp(kNames[k], name) != 0) ++k;
    Check(k < kParams && count == kCount[k], std::string("offline tensor ") + name);
  }
  std::vector<float> w2(kCount[2]);
  MUST(trireme_checkpoint_read(c, "w2", "master", w2.data(), kCount[2]));
  Check(w2 == final_params[2], "offline master w2 equals the gathered w2");
  MUST(trireme_checkpoint_close(c));
}

// Whether any rank failed a check: the failure counts summed over the ranks.
bool AnyRankFailed(trireme_comm* world) {
  float failures = static_cast<float>(g_failures);
  MUST(trireme_comm_all_reduce(world, &failures, 1, TRIREME_REDUCE_SUM));
  return failures != 0;
}

}  // namespace

int main(int argc, char** argv) {
  trireme_comm* world = nullptr;
  MUST(trireme_mpi_world(&argc, &argv, &world));
  const char* ckpt = nullptr;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--ckpt") == 0) ckpt = argv[i + 1];
  g_rank = trireme_comm_rank(world);
  const int size = trireme_comm_size(world);
  if (ckpt == nullptr || N % size != 0) {
    std::fprintf(stderr, "usage: mpirun -np R train --ckpt DIR  (R divides %d)\n", N);
    return 1;
  }

  trireme_engine* e = MakeEngine(world, 3);
  MUST(trireme_engine_initialize(e, Init, nullptr));
  trireme_step_stats st;
  trireme_step_stats_init(&st);
  std::vector<double> loss;
  for (int s = 0; s < STEPS; ++s) {
    if (s == STEPS / 2) BadLoad(e, ckpt);  // the engine must be untouched and go on
    loss.push_back(TrainStep(e, g_rank, size, &st));
    if (g_rank == 0)
      std::printf("step %2lld  loss %.6f  grad_norm %.6f\n", static_cast<long long>(st.step),
                  loss.back(), st.grad_norm);
  }
  const Params final_params = Gather(e);
  trireme_memory_stats mem;
  trireme_memory_stats_init(&mem);
  MUST(trireme_engine_memory(e, &mem));
  trireme_traffic_stats tr;
  trireme_traffic_stats_init(&tr);
  MUST(trireme_engine_traffic(e, &tr));
  if (g_rank == 0) {
    using ll = long long;
    std::printf("rank 0 memory peak %lld B:", ll(mem.total_peak));
    for (int c = 0; c < TRIREME_MEM_CATEGORIES; ++c)
      std::printf(" %s %lld", trireme_memory_category_name(c), ll(mem.peak[c]));
    std::printf("\nrank 0 traffic: sent %lld B, received %lld B, %lld calls, busy %.4f s\n",
                ll(tr.bytes_sent), ll(tr.bytes_received), ll(tr.calls), tr.busy_seconds);
  }
  MUST(trireme_engine_save(e, ckpt, STEPS, nullptr, nullptr));
  MUST(trireme_engine_destroy(e));
  Check(loss.back() < 0.7 * loss.front(), "the loss fell by 30%: " + std::to_string(loss.front()) +
                                              " -> " + std::to_string(loss.back()));

  Reference ref;
  MUST(trireme_run_threads(1, RunReference, &ref));
  double worst_loss = 0;
  for (int s = 0; s < STEPS; ++s)
    worst_loss = std::max(worst_loss, std::fabs(loss[s] - ref.loss[s]) / (1 + ref.loss[s]));
  Check(worst_loss <= 1e-5, "losses match the reference: " + std::to_string(worst_loss));
  Compare("ZeRO-3 on the MPI ranks vs 1-rank reference, step 15", final_params, ref.at15, 1e-5);

  Reshard rs;
  rs.ckpt = ckpt;
  MUST(trireme_run_threads(1, RunReshard, &rs));
  Check(rs.step == STEPS, "the checkpoint's step: " + std::to_string(rs.step));
  Compare("checkpoint loaded on 1 rank, ZeRO-1", rs.loaded, final_params, 1e-6);
  Compare("its step 16 vs the reference's", rs.after, ref.at16, 1e-5);
  if (g_rank == 0) Offline(ckpt, final_params);

  const bool failed = AnyRankFailed(world);
  MUST(trireme_comm_destroy(world));  // the last world: MPI is finalized
  // MPI cannot start again in this process: an error, not a crash.
  trireme_comm* again = nullptr;
  if (trireme_mpi_world(&argc, &argv, &again) != TRIREME_FAILED_PRECONDITION || again != nullptr) {
    std::printf("FAIL: a second trireme_mpi_world after MPI_Finalize: %s\n", trireme_last_error());
    return 1;
  }
  if (g_rank == 0) std::printf(failed ? "FAIL\n" : "PASS\n");
  return failed ? 1 : 0;
}
