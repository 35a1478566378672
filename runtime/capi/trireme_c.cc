// The C API (include/trireme/trireme.h) over the ZeRO engine, the
// communicators, the grid and the checkpoints.
//
// Every entry point that returns a trireme_status runs its body under
// Guard: an absl::Status becomes a code and a message, and a C++ exception
// (out of memory, a thread the system cannot start) becomes
// RESOURCE_EXHAUSTED or INTERNAL -- nothing unwinds into the caller's C
// frames or terminates the process.
//
// Lifetimes: an engine uses its DP communicator, a grid its world. Each
// handle counts its users; destroying a communicator or a grid still in use
// is refused (FAILED_PRECONDITION), never a dangling pointer.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/comm/mpi_comm.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/grid/grid.h"
#include "runtime/zero/engine.h"
#include "trireme/trireme.h"

struct trireme_comm {
  trireme::Communicator* comm = nullptr;         // the group
  trireme::ParallelGrid* grid = nullptr;         // the grid whose DP, TP or PP group it is
  trireme::Communicator* world = nullptr;        // the world it was split from (itself at the top)
  std::unique_ptr<trireme::Communicator> owned;  // trireme_mpi_world's
  std::atomic<int> users{0};                     // grids and engines over it
};

struct trireme_grid {
  trireme_comm* world = nullptr;
  std::unique_ptr<trireme::ParallelGrid> grid;
  trireme_comm dp, tp, pp;
};

struct trireme_checkpoint {
  std::string dir;
  trireme::checkpoint::ManifestSummary summary;
};

struct trireme_units {
  std::vector<trireme::UnitSpec> units;
};

struct trireme_engine {
  uint64_t id = 0;               // keys the per-thread messages (never reused)
  trireme_comm* dp = nullptr;    // counted in dp->users
  trireme::Communicator* world;  // checkpoints are collective over it
  bool initialized = false;      // by initialize or load
  std::unique_ptr<trireme::MemoryTracker> tracker;
  std::unique_ptr<trireme::ZeroEngine> engine;
};

namespace {

// The version-1 end of each size-prefixed struct: a caller's struct_size
// must reach it. Fields added later lie beyond it and are read (options) or
// written (results) only as far as the caller's struct_size reaches.
#define TRIREME_END_OF(T, field) (offsetof(T, field) + sizeof(static_cast<T*>(nullptr)->field))
constexpr size_t kOptionsV1 = TRIREME_END_OF(trireme_engine_options, kernel_threads);
constexpr size_t kViewV1 = TRIREME_END_OF(trireme_view, device_index);
constexpr size_t kStepStatsV1 = TRIREME_END_OF(trireme_step_stats, skipped);
constexpr size_t kMemoryV1 = TRIREME_END_OF(trireme_memory_stats, total_peak);
constexpr size_t kTrafficV1 = TRIREME_END_OF(trireme_traffic_stats, blocked_seconds);
#undef TRIREME_END_OF

constexpr int kMaxThreadRanks = 1024;
constexpr int kMaxDims = 8;

thread_local std::string t_last_error;
// The calling thread's last message per engine (by id): what
// trireme_engine_last_error returns. A node map: a message stays where it is
// while other engines' messages come and go.
thread_local absl::node_hash_map<uint64_t, std::string> t_engine_errors;
std::atomic<uint64_t> g_next_engine_id{1};
std::mutex g_mpi_mu;   // trireme_mpi_world / trireme_comm_destroy of mpi worlds
int g_mpi_worlds = 0;  // trireme_mpi_world communicators alive

// The C codes and the absl codes they stand for, both ways.
constexpr std::pair<trireme_status, absl::StatusCode> kCodes[] = {
    {TRIREME_INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
    {TRIREME_INVALID_ARGUMENT, absl::StatusCode::kOutOfRange},
    {TRIREME_FAILED_PRECONDITION, absl::StatusCode::kFailedPrecondition},
    {TRIREME_NOT_FOUND, absl::StatusCode::kNotFound},
    {TRIREME_DATA_LOSS, absl::StatusCode::kDataLoss},
    {TRIREME_DEADLINE_EXCEEDED, absl::StatusCode::kDeadlineExceeded},
    {TRIREME_RESOURCE_EXHAUSTED, absl::StatusCode::kResourceExhausted},
    {TRIREME_UNAVAILABLE, absl::StatusCode::kUnavailable},
    {TRIREME_ALREADY_EXISTS, absl::StatusCode::kAlreadyExists},
    {TRIREME_ABORTED, absl::StatusCode::kAborted},
};

trireme_status Code(const absl::Status& s) {
  if (s.ok()) return TRIREME_OK;
  for (const auto& [c, a] : kCodes) {
    if (a == s.code()) return c;
  }
  return TRIREME_INTERNAL;
}

// A failure a caller's function reported with `code`, as a Status of the
// same kind (so the code comes back out of the C API unchanged).
absl::Status FromCode(trireme_status code, const std::string& message) {
  if (code == TRIREME_OK) return absl::OkStatus();
  for (const auto& [c, a] : kCodes) {
    if (c == code) return absl::Status(a, message);  // the first: kInvalidArgument
  }
  return absl::InternalError(message);
}

// Records `s` as the thread's (and, for this thread, the handle's) last
// error; returns its code.
trireme_status Fail(const absl::Status& s, const trireme_engine* e = nullptr) {
  if (s.ok()) return TRIREME_OK;
  t_last_error = std::string(s.message());
  if (e != nullptr) t_engine_errors[e->id] = t_last_error;
  return Code(s);
}

// Fail for the exception handlers: records what it can without throwing.
trireme_status FailNoThrow(trireme_status code, const char* message,
                           const trireme_engine* e) noexcept {
  try {
    t_last_error = message;
    if (e != nullptr) t_engine_errors[e->id] = message;
  } catch (...) {
    t_last_error.clear();
  }
  return code;
}

// Runs an entry point's body; no exception leaves it. `e`: the engine the
// call is on (its message is recorded too).
template <typename Body>
trireme_status Guard(Body&& body, const trireme_engine* e = nullptr) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return FailNoThrow(TRIREME_RESOURCE_EXHAUSTED, "out of memory", e);
  } catch (const std::system_error& ex) {
    // A thread the system cannot start (EAGAIN) is a resource, not a bug.
    return FailNoThrow(ex.code() == std::errc::resource_unavailable_try_again
                           ? TRIREME_RESOURCE_EXHAUSTED
                           : TRIREME_INTERNAL,
                       ex.what(), e);
  } catch (const std::exception& ex) {
    return FailNoThrow(TRIREME_INTERNAL, ex.what(), e);
  } catch (...) {
    return FailNoThrow(TRIREME_INTERNAL, "an unknown C++ exception", e);
  }
}

absl::Status NotInitialized(const char* call) {
  return absl::FailedPreconditionError(
      absl::StrCat(call,
                   ": the engine has no parameter values yet (call "
                   "trireme_engine_initialize or trireme_engine_load first)"));
}

// The calling thread's last message, or a note that there is none (a
// caller's function that failed without a failing trireme_* call).
std::string LastOrNone() {
  return t_last_error.empty() ? "(no trireme_* call failed on that thread)" : t_last_error;
}

trireme_status Null(const char* what, const trireme_engine* e = nullptr) {
  return Fail(absl::InvalidArgumentError(absl::StrCat(what, " is NULL")), e);
}

// A size-prefixed struct from the caller: at least version 1's size.
template <typename T>
trireme_status CheckSize(const T* p, size_t v1_size, const char* what, const char* init,
                         const trireme_engine* e = nullptr) {
  if (p == nullptr) return Null(what, e);
  if (p->struct_size < v1_size) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(what, ": struct_size ", p->struct_size,
                                                        " < ", v1_size, " (call ", init, ")")),
                e);
  }
  return TRIREME_OK;
}

// Writes a result struct as far as the caller's struct_size reaches.
template <typename T>
void CopyOut(T full, T* out) {
  full.struct_size = out->struct_size;
  std::memcpy(out, &full, std::min(out->struct_size, sizeof(T)));
}

// An enum the caller passed, as its int value: a C caller may pass any int,
// and loading an out-of-range value through the C++ enum type is undefined.
template <typename E>
int EnumValue(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "C enums are ints here");
  int v;
  std::memcpy(&v, &e, sizeof(v));
  return v;
}

trireme_dtype FromDType(trireme::DType d) {
  return d == trireme::DType::kBF16  ? TRIREME_BF16
         : d == trireme::DType::kF16 ? TRIREME_F16
                                     : TRIREME_F32;
}

absl::StatusOr<trireme::DType> ToDType(int d, const char* what) {
  switch (d) {
    case TRIREME_F32:
      return trireme::DType::kF32;
    case TRIREME_BF16:
      return trireme::DType::kBF16;
    case TRIREME_F16:
      return trireme::DType::kF16;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", d, " is not TRIREME_F32 (0), TRIREME_BF16 (1) or TRIREME_F16 (2)"));
}

absl::Status NameOk(const char* name, const char* what) {
  if (name == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, " is NULL"));
  if (name[0] == '\0') return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  return absl::OkStatus();
}

// The engine options from the C struct; every enum checked.
absl::StatusOr<trireme::EngineOptions> ToEngineOptions(const trireme_engine_options& c) {
  trireme::EngineOptions o;
  o.stage = c.stage;
  auto compute = ToDType(EnumValue(c.compute_dtype), "compute_dtype");
  if (!compute.ok()) return compute.status();
  auto grad = ToDType(EnumValue(c.grad_dtype), "grad_dtype");
  if (!grad.ok()) return grad.status();
  o.compute_dtype = *compute;
  o.grad_dtype = *grad;
  if (c.grad_reduce_dtype != -1) {
    auto r = ToDType(c.grad_reduce_dtype, "grad_reduce_dtype (-1: grad_dtype)");
    if (!r.ok()) return r.status();
    o.grad_reduce_dtype = *r;
  }
  o.grad_accum = c.grad_accum;
  switch (EnumValue(c.device)) {
    case TRIREME_DEVICE_CPU:
      o.device = trireme::Device::Cpu();
      break;
    case TRIREME_DEVICE_CPU_ASYNC:
      o.device = trireme::Device::CpuAsync();
      break;
    case TRIREME_DEVICE_CUDA:
      o.device = trireme::Device::Cuda(c.device_index);
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("device ", EnumValue(c.device),
                                                     " is not CPU (0), CPU_ASYNC (1) or CUDA (2)"));
  }
  switch (EnumValue(c.optimizer)) {
    case TRIREME_ADAMW:
      o.optimizer.kind = trireme::OptimizerKind::kAdamW;
      break;
    case TRIREME_SGD:
      o.optimizer.kind = trireme::OptimizerKind::kSgd;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer ", EnumValue(c.optimizer), " is not ADAMW (0) or SGD (1)"));
  }
  o.optimizer.weight_decay = c.weight_decay;
  o.optimizer.beta1 = c.beta1;
  o.optimizer.beta2 = c.beta2;
  o.optimizer.eps = c.eps;
  o.optimizer.momentum = c.momentum;
  switch (EnumValue(c.lr_schedule)) {
    case TRIREME_LR_CONSTANT:
      o.lr.kind = trireme::LrSchedule::Kind::kConstant;
      break;
    case TRIREME_LR_WARMUP_COSINE:
      o.lr.kind = trireme::LrSchedule::Kind::kWarmupCosine;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("lr_schedule ", EnumValue(c.lr_schedule),
                                                     " is not CONSTANT (0) or WARMUP_COSINE (1)"));
  }
  o.lr.lr = c.lr;
  o.lr.min_lr = c.min_lr;
  o.lr.warmup_steps = c.warmup_steps;
  o.lr.total_steps = c.total_steps;
  o.prefetch_depth = c.prefetch_depth;
  o.loss_scaling = c.loss_scaling != 0;
  o.on_nonfinite = c.abort_on_nonfinite != 0 ? trireme::EngineOptions::NonFinite::kAbort
                                             : trireme::EngineOptions::NonFinite::kSkip;
  o.kernel_threads = c.kernel_threads;
  o.clip_norm = c.clip_norm;
  const std::pair<const char*, float> reals[] = {{"lr", c.lr},
                                                 {"min_lr", c.min_lr},
                                                 {"weight_decay", c.weight_decay},
                                                 {"beta1", c.beta1},
                                                 {"beta2", c.beta2},
                                                 {"eps", c.eps},
                                                 {"momentum", c.momentum},
                                                 {"clip_norm", c.clip_norm}};
  for (const auto& [name, value] : reals) {
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is ", value, ": not finite"));
    }
  }
  if (c.kernel_threads < 1 || c.kernel_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel_threads ", c.kernel_threads, " is not in 1..256"));
  }
  return o;
}

trireme_status View(trireme_engine* e, absl::StatusOr<trireme::MutView> v, trireme_view* out) {
  if (trireme_status s = CheckSize(out, kViewV1, "out", "trireme_view_init", e); s != TRIREME_OK) {
    return s;
  }
  if (!v.ok()) return Fail(v.status(), e);
  trireme_view full{};
  full.data = v->data;
  full.count = v->count;
  full.dtype = FromDType(v->dtype);
  const trireme::Device d = e->engine->options().device;
  full.device = d.kind == trireme::DeviceKind::kCuda       ? TRIREME_DEVICE_CUDA
                : d.kind == trireme::DeviceKind::kCpuAsync ? TRIREME_DEVICE_CPU_ASYNC
                                                           : TRIREME_DEVICE_CPU;
  full.device_index = d.index;
  CopyOut(full, out);
  return TRIREME_OK;
}

// The C layout callback as the checkpoint's LayoutFn.
trireme::checkpoint::LayoutFn Layout(trireme_layout_fn fn, void* user) {
  if (fn == nullptr) return trireme::checkpoint::IdentityLayout;
  return
      [fn, user](const trireme::ParamInfo& p) -> absl::StatusOr<trireme::checkpoint::TensorLayout> {
        const int ndim = static_cast<int>(p.shape.size());
        trireme_layout c{};
        c.struct_size = sizeof(c);
        c.ndim = ndim;
        for (int d = 0; d < ndim; ++d) c.global_shape[d] = p.shape[d];
        c.owner = 1;
        const trireme_status code = fn(p.name.c_str(), ndim, p.shape.data(), &c, user);
        if (code != TRIREME_OK) {
          return FromCode(code, absl::StrCat("the layout function returned ", code,
                                             " for parameter '", p.name, "'"));
        }
        if (c.struct_size != sizeof(c) || c.ndim != ndim) {
          return absl::InvalidArgumentError(
              absl::StrCat("layout of '", p.name, "': ndim ", c.ndim, " (the parameter has ", ndim,
                           ") or struct_size ", c.struct_size, " changed"));
        }
        trireme::checkpoint::TensorLayout l;
        l.name = p.name;
        l.shape.assign(c.global_shape, c.global_shape + ndim);
        l.block_offset.assign(c.offset, c.offset + ndim);
        l.block_shape = p.shape;
        l.save = c.owner != 0;
        for (int d = 0; d < ndim; ++d) {
          if (c.global_shape[d] < p.shape[d] || c.offset[d] < 0 ||
              c.offset[d] > c.global_shape[d] - p.shape[d]) {
            return absl::InvalidArgumentError(absl::StrCat(
                "layout of '", p.name, "': dim ", d, ": a block of ", p.shape[d], " at offset ",
                c.offset[d], " is outside the global size ", c.global_shape[d]));
          }
        }
        return l;
      };
}

trireme_status Traffic(const trireme::Communicator& c, trireme_traffic_stats* out,
                       const trireme_engine* e) {
  if (trireme_status s = CheckSize(out, kTrafficV1, "out", "trireme_traffic_stats_init", e);
      s != TRIREME_OK) {
    return s;
  }
  const trireme::CommStats st = c.stats();
  trireme_traffic_stats full{};
  full.bytes_sent = st.total_sent();
  full.bytes_received = st.total_received();
  for (const trireme::CommStats::Op& op : st.ops) full.calls += op.calls;
  full.busy_seconds = st.busy_seconds;
  full.blocked_seconds = st.blocked_seconds + st.stream_blocked_seconds;
  CopyOut(full, out);
  return TRIREME_OK;
}

}  // namespace

extern "C" {

int trireme_version(void) { return TRIREME_ABI_VERSION; }
const char* trireme_version_string(void) { return TRIREME_VERSION_STRING; }
const char* trireme_last_error(void) { return t_last_error.c_str(); }

// ------------------------------------------------------------- worlds

trireme_status trireme_run_threads(int ranks, trireme_rank_fn fn, void* user) {
  return Guard([&]() -> trireme_status {
    if (fn == nullptr) return Null("fn");
    if (ranks < 1 || ranks > kMaxThreadRanks) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("ranks (", ranks, ") must be in 1..", kMaxThreadRanks)));
    }
    absl::StatusOr<trireme::CommOptions> options = trireme::CommOptionsFromEnv();
    if (!options.ok()) return Fail(options.status());
    absl::Status s = trireme::RunOnRanks(
        ranks,
        [&](trireme::Communicator& c) -> absl::Status {
          trireme_comm comm;
          comm.comm = comm.world = &c;
          t_last_error.clear();
          const trireme_status code = fn(&comm, user);
          std::string leaked;
          if (const int left = comm.users.load(); left > 0) {
            leaked = absl::StrCat(left,
                                  " grid(s) or engine(s) still using its communicator, which "
                                  "ends with the function (they are leaked: destroy them before "
                                  "returning)");
          }
          if (code != TRIREME_OK) {
            return FromCode(
                code, absl::StrCat("rank ", c.rank(), "'s function returned ", code, ": ",
                                   LastOrNone(), leaked.empty() ? "" : "; and it left ", leaked));
          }
          if (!leaked.empty()) {
            return absl::FailedPreconditionError(
                absl::StrCat("rank ", c.rank(), "'s function returned with ", leaked));
          }
          return absl::OkStatus();
        },
        *options);
    return Fail(s);
  });
}

trireme_status trireme_mpi_world(int* argc, char*** argv, trireme_comm** out) {
  return Guard([&]() -> trireme_status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    std::lock_guard<std::mutex> lock(g_mpi_mu);
    absl::Status s = trireme::MpiRuntime::Init(argc, argv);
    if (!s.ok()) return Fail(s);
    absl::StatusOr<trireme::CommOptions> o = trireme::CommOptionsFromEnv();
    if (!o.ok()) return Fail(o.status());
    absl::StatusOr<std::unique_ptr<trireme::Communicator>> w = trireme::MpiRuntime::World(*o);
    if (!w.ok()) return Fail(w.status());
    auto c = std::make_unique<trireme_comm>();
    c->owned = *std::move(w);
    c->comm = c->world = c->owned.get();
    ++g_mpi_worlds;
    *out = c.release();
    return TRIREME_OK;
  });
}

trireme_status trireme_comm_destroy(trireme_comm* comm) {
  return Guard([&]() -> trireme_status {
    if (comm == nullptr) return TRIREME_OK;
    if (comm->owned == nullptr) {
      return Fail(absl::InvalidArgumentError(
          "comm belongs to trireme_run_threads or a grid: only trireme_mpi_world's are "
          "destroyed"));
    }
    if (const int users = comm->users.load(); users > 0) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          "comm still has ", users, " grid(s) or engine(s) over it: destroy them first")));
    }
    std::lock_guard<std::mutex> lock(g_mpi_mu);
    delete comm;
    if (--g_mpi_worlds == 0) trireme::MpiRuntime::Finalize();
    return TRIREME_OK;
  });
}

int trireme_comm_rank(const trireme_comm* comm) {
  return comm == nullptr || comm->comm == nullptr ? -1 : comm->comm->rank();
}
int trireme_comm_size(const trireme_comm* comm) {
  return comm == nullptr || comm->comm == nullptr ? -1 : comm->comm->size();
}

trireme_status trireme_comm_all_reduce(trireme_comm* comm, float* values, int64_t count,
                                       trireme_reduce_op op) {
  return Guard([&]() -> trireme_status {
    if (comm == nullptr || comm->comm == nullptr) return Null("comm");
    if (values == nullptr) return Null("values");
    if (count < 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("count ", count, " is negative")));
    }
    trireme::ReduceOp r;
    switch (EnumValue(op)) {
      case TRIREME_REDUCE_SUM:
        r = trireme::ReduceOp::kSum;
        break;
      case TRIREME_REDUCE_AVG:
        r = trireme::ReduceOp::kAvg;
        break;
      case TRIREME_REDUCE_MAX:
        r = trireme::ReduceOp::kMax;
        break;
      default:
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("reduce op ", EnumValue(op), " is not SUM (0), AVG (1) or MAX (2)")));
    }
    const trireme::MutView v{values, count, trireme::DType::kF32};
    return Fail(comm->comm->AllReduce(v, v, r));  // in place, as the backends allow
  });
}

trireme_status trireme_grid_create(trireme_comm* world, int dp, int tp, int pp,
                                   trireme_grid** out) {
  return Guard([&]() -> trireme_status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    if (world == nullptr || world->comm == nullptr) return Null("world");
    trireme::GridDims dims;
    dims.dp = dp <= 0 ? -1 : dp;
    dims.tp = tp;
    dims.pp = pp;
    absl::StatusOr<std::unique_ptr<trireme::ParallelGrid>> g =
        trireme::ParallelGrid::Create(dims, *world->comm);
    if (!g.ok()) return Fail(g.status());
    auto grid = std::make_unique<trireme_grid>();
    grid->world = world;
    grid->grid = *std::move(g);
    grid->dp.comm = &grid->grid->dp_group();
    grid->tp.comm = &grid->grid->tp_group();
    grid->pp.comm = &grid->grid->pp_group();
    for (trireme_comm* c : {&grid->dp, &grid->tp, &grid->pp}) {
      c->world = world->comm;
      c->grid = grid->grid.get();
    }
    ++world->users;
    *out = grid.release();
    return TRIREME_OK;
  });
}

trireme_status trireme_grid_destroy(trireme_grid* grid) {
  return Guard([&]() -> trireme_status {
    if (grid == nullptr) return TRIREME_OK;
    const int users = grid->dp.users + grid->tp.users + grid->pp.users;
    if (users > 0) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          "the grid's groups still have ", users, " engine(s) over them: destroy them first")));
    }
    --grid->world->users;
    delete grid;
    return TRIREME_OK;
  });
}

trireme_status trireme_grid_group(trireme_grid* grid, trireme_axis axis, trireme_comm** out) {
  return Guard([&]() -> trireme_status {
    if (grid == nullptr) return Null("grid");
    if (out == nullptr) return Null("out");
    switch (EnumValue(axis)) {
      case TRIREME_AXIS_DP:
        *out = &grid->dp;
        return TRIREME_OK;
      case TRIREME_AXIS_TP:
        *out = &grid->tp;
        return TRIREME_OK;
      case TRIREME_AXIS_PP:
        *out = &grid->pp;
        return TRIREME_OK;
    }
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("axis ", EnumValue(axis), " is not DP (0), TP (1) or PP (2)")));
  });
}

// --------------------------------------------------------- registration

trireme_status trireme_units_create(trireme_units** out) {
  return Guard([&]() -> trireme_status {
    if (out == nullptr) return Null("out");
    *out = new trireme_units();
    return TRIREME_OK;
  });
}

trireme_status trireme_units_destroy(trireme_units* units) {
  delete units;
  return TRIREME_OK;
}

trireme_status trireme_units_add_unit(trireme_units* units, const char* name, int* index) {
  return Guard([&]() -> trireme_status {
    if (units == nullptr) return Null("units");
    if (absl::Status s = NameOk(name, "unit name"); !s.ok()) return Fail(s);
    units->units.push_back({name, {}});
    if (index != nullptr) *index = static_cast<int>(units->units.size()) - 1;
    return TRIREME_OK;
  });
}

trireme_status trireme_units_add_param(trireme_units* units, int unit, const char* name, int ndim,
                                       const int64_t* shape, int flags) {
  return Guard([&]() -> trireme_status {
    if (units == nullptr) return Null("units");
    if (absl::Status s = NameOk(name, "parameter name"); !s.ok()) return Fail(s);
    if (unit < 0 || unit >= static_cast<int>(units->units.size())) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "': unit ", unit, " of ", units->units.size())));
    }
    if (ndim < 1 || ndim > kMaxDims || shape == nullptr) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("parameter '", name, "': ndim ", ndim,
                                                          " (1..", kMaxDims, ") with a shape")));
    }
    trireme::ParamSpec p;
    p.name = name;
    int64_t numel = 1;
    for (int d = 0; d < ndim; ++d) {
      if (shape[d] < 1) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("parameter '", name, "': dimension ", d, " is ", shape[d])));
      }
      if (numel > (int64_t{1} << 60) / shape[d]) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("parameter '", name, "': more than 2^60 elements")));
      }
      numel *= shape[d];
      p.shape.push_back(shape[d]);
    }
    const int known = TRIREME_PARAM_NO_DECAY | TRIREME_PARAM_FROZEN | TRIREME_PARAM_TP_SPLIT |
                      TRIREME_PARAM_NORM_DUPLICATE;
    if ((flags & ~known) != 0) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "': unknown flags 0x", absl::Hex(flags & ~known))));
    }
    p.weight_decay = (flags & TRIREME_PARAM_NO_DECAY) == 0;
    p.requires_grad = (flags & TRIREME_PARAM_FROZEN) == 0;
    p.replicated_over_tp = (flags & TRIREME_PARAM_TP_SPLIT) == 0;
    p.norm_duplicate = (flags & TRIREME_PARAM_NORM_DUPLICATE) != 0;
    units->units[unit].params.push_back(std::move(p));
    return TRIREME_OK;
  });
}

// --------------------------------------------------------------- engine

void trireme_engine_options_init(trireme_engine_options* o) {
  if (o == nullptr) return;
  *o = trireme_engine_options{};
  o->struct_size = sizeof(*o);
  o->stage = 3;
  o->compute_dtype = o->grad_dtype = TRIREME_F32;
  o->device = TRIREME_DEVICE_CPU;
  o->grad_accum = 1;
  o->lr = 1e-3f;
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->optimizer = TRIREME_ADAMW;
  o->momentum = 0.9f;
  o->lr_schedule = TRIREME_LR_CONSTANT;
  o->total_steps = 1;
  o->grad_reduce_dtype = -1;
  o->prefetch_depth = 1;
  o->kernel_threads = 1;
}

trireme_status trireme_engine_create(trireme_comm* dp, const trireme_units* units,
                                     const trireme_engine_options* options, trireme_engine** out) {
  return Guard([&]() -> trireme_status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    if (dp == nullptr || dp->comm == nullptr) return Null("dp");
    if (units == nullptr) return Null("units");
    if (trireme_status s = CheckSize(options, kOptionsV1, "options", "trireme_engine_options_init");
        s != TRIREME_OK) {
      return s;
    }
    absl::StatusOr<trireme::EngineOptions> o = ToEngineOptions(*options);
    if (!o.ok()) return Fail(o.status());
    if (dp->grid != nullptr && dp->comm == &dp->grid->dp_group()) {
      o->dp_control = &dp->grid->dp_control();
      o->tp_control = &dp->grid->tp_control();
      o->pp_control = &dp->grid->pp_control();
    }
    auto e = std::make_unique<trireme_engine>();
    e->id = g_next_engine_id++;
    e->tracker = std::make_unique<trireme::MemoryTracker>();
    auto engine = trireme::ZeroEngine::Create(*dp->comm, units->units, *o, e->tracker.get());
    if (!engine.ok()) return Fail(engine.status());
    e->engine = *std::move(engine);
    e->dp = dp;
    e->world = dp->world != nullptr ? dp->world : dp->comm;
    ++dp->users;
    *out = e.release();
    return TRIREME_OK;
  });
}

trireme_status trireme_engine_destroy(trireme_engine* e) {
  return Guard([&]() -> trireme_status {
    if (e == nullptr) return TRIREME_OK;
    t_engine_errors.erase(e->id);
    trireme_comm* dp = e->dp;
    delete e;
    --dp->users;
    return TRIREME_OK;
  });
}

const char* trireme_engine_last_error(const trireme_engine* e) {
  if (e == nullptr) return "engine is NULL";
  auto it = t_engine_errors.find(e->id);
  return it == t_engine_errors.end() ? "" : it->second.c_str();
}

trireme_status trireme_engine_initialize(trireme_engine* e, trireme_init_fn fn, void* user) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (fn == nullptr) return Null("fn", e);
        absl::Status s =
            e->engine->Initialize([&](const trireme::ParamInfo& p, float* values) -> absl::Status {
              const trireme_status code = fn(p.name.c_str(), values, p.numel, user);
              return FromCode(code, absl::StrCat("the init function returned ", code,
                                                 " for parameter '", p.name, "'"));
            });
        if (s.ok()) e->initialized = true;
        return Fail(s, e);
      },
      e);
}

#define TRIREME_HOOK(name, method)                                    \
  trireme_status name(trireme_engine* e, int unit) {                  \
    return Guard(                                                     \
        [&]() -> trireme_status {                                     \
          if (e == nullptr) return Null("engine");                    \
          if (!e->initialized) return Fail(NotInitialized(#name), e); \
          return Fail(e->engine->method(unit), e);                    \
        },                                                            \
        e);                                                           \
  }
TRIREME_HOOK(trireme_engine_pre_forward, PreForward)
TRIREME_HOOK(trireme_engine_post_forward, PostForward)
TRIREME_HOOK(trireme_engine_pre_backward, PreBackward)
TRIREME_HOOK(trireme_engine_post_backward, PostBackward)
#undef TRIREME_HOOK

void trireme_view_init(trireme_view* v) {
  if (v == nullptr) return;
  *v = trireme_view{};
  v->struct_size = sizeof(*v);
}

trireme_status trireme_engine_param(trireme_engine* e, int unit, int param, trireme_view* out) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        return View(e, e->engine->Param(unit, param), out);
      },
      e);
}

trireme_status trireme_engine_grad(trireme_engine* e, int unit, int param, trireme_view* out) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        return View(e, e->engine->Grad(unit, param), out);
      },
      e);
}

trireme_status trireme_engine_synchronize(trireme_engine* e) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        return Fail(e->engine->Synchronize(), e);
      },
      e);
}

void trireme_step_stats_init(trireme_step_stats* s) {
  if (s == nullptr) return;
  *s = trireme_step_stats{};
  s->struct_size = sizeof(*s);
}

trireme_status trireme_engine_step(trireme_engine* e, trireme_step_stats* out) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (!e->initialized) return Fail(NotInitialized("trireme_engine_step"), e);
        if (out != nullptr) {
          if (trireme_status s = CheckSize(out, kStepStatsV1, "out", "trireme_step_stats_init", e);
              s != TRIREME_OK) {
            return s;
          }
        }
        absl::StatusOr<trireme::StepStats> st = e->engine->Step();
        if (!st.ok()) return Fail(st.status(), e);
        if (out != nullptr) {
          trireme_step_stats full{};
          full.step = st->step;
          full.lr = st->lr;
          full.grad_norm = st->grad_norm;
          full.skipped = st->skipped ? 1 : 0;
          CopyOut(full, out);
        }
        return TRIREME_OK;
      },
      e);
}

trireme_status trireme_engine_gather_param(trireme_engine* e, const char* name, float* values,
                                           int64_t count) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (name == nullptr) return Null("name", e);
        if (values == nullptr) return Null("values", e);
        if (!e->initialized) return Fail(NotInitialized("trireme_engine_gather_param"), e);
        absl::StatusOr<trireme::ParamInfo> p = e->engine->param_info(name);
        if (!p.ok()) return Fail(p.status(), e);
        if (count != p->numel) {
          return Fail(absl::InvalidArgumentError(absl::StrCat(
                          "parameter '", name, "' has ", p->numel, " elements; count is ", count)),
                      e);
        }
        absl::StatusOr<std::vector<float>> full = e->engine->GatherFull(name);
        if (!full.ok()) return Fail(full.status(), e);
        std::memcpy(values, full->data(), full->size() * sizeof(float));
        return TRIREME_OK;
      },
      e);
}

// ---------------------------------------------------------- checkpoints

trireme_status trireme_engine_save(trireme_engine* e, const char* root, int64_t step,
                                   trireme_layout_fn layout, void* user) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (root == nullptr) return Null("root", e);
        if (!e->initialized) return Fail(NotInitialized("trireme_engine_save"), e);
        if (step < 0) {
          return Fail(absl::InvalidArgumentError(absl::StrCat("step ", step, " is negative")), e);
        }
        trireme::checkpoint::SaveOptions o;
        o.root = root;
        absl::StatusOr<std::string> dir =
            trireme::checkpoint::Save(*e->world, *e->engine, Layout(layout, user), step, o);
        return Fail(dir.status(), e);
      },
      e);
}

trireme_status trireme_engine_load(trireme_engine* e, const char* path, trireme_layout_fn layout,
                                   void* user, int64_t* step) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (path == nullptr) return Null("path", e);
        // Load resolves `path` (a step directory or a root with `latest`) inside
        // its agreement, so every rank fails together if any cannot see it.
        absl::StatusOr<trireme::checkpoint::LoadResult> r =
            trireme::checkpoint::Load(*e->world, *e->engine, Layout(layout, user), path);
        if (!r.ok()) return Fail(r.status(), e);
        e->initialized = true;
        if (step != nullptr) *step = r->step;
        return TRIREME_OK;
      },
      e);
}

trireme_status trireme_checkpoint_open(const char* path, trireme_checkpoint** out) {
  return Guard([&]() -> trireme_status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    if (path == nullptr) return Null("path");
    absl::StatusOr<std::string> dir = trireme::checkpoint::Resolve(path);
    if (!dir.ok()) return Fail(dir.status());
    absl::StatusOr<trireme::checkpoint::ManifestSummary> m = trireme::checkpoint::Inspect(*dir);
    if (!m.ok()) return Fail(m.status());
    *out = new trireme_checkpoint{*dir, *std::move(m)};
    return TRIREME_OK;
  });
}

trireme_status trireme_checkpoint_close(trireme_checkpoint* c) {
  delete c;
  return TRIREME_OK;
}

trireme_status trireme_checkpoint_info(const trireme_checkpoint* c, int64_t* step,
                                       int* num_tensors) {
  return Guard([&]() -> trireme_status {
    if (c == nullptr) return Null("checkpoint");
    if (step != nullptr) *step = c->summary.step;
    if (num_tensors != nullptr) *num_tensors = static_cast<int>(c->summary.tensors.size());
    return TRIREME_OK;
  });
}

trireme_status trireme_checkpoint_tensor(const trireme_checkpoint* c, int index, const char** name,
                                         int* ndim, int64_t* shape) {
  return Guard([&]() -> trireme_status {
    if (c == nullptr) return Null("checkpoint");
    const int n = static_cast<int>(c->summary.tensors.size());
    if (index < 0 || index >= n) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("tensor index ", index, " is outside the checkpoint's ", n)));
    }
    const trireme::checkpoint::TensorSpec& t = c->summary.tensors[index];
    if (t.shape.size() > kMaxDims) {
      return Fail(
          absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' has ", t.shape.size(),
                                                  " dims; the C API reads up to ", kMaxDims)));
    }
    if (name != nullptr) *name = t.name.c_str();
    if (ndim != nullptr) *ndim = static_cast<int>(t.shape.size());
    if (shape != nullptr) std::copy(t.shape.begin(), t.shape.end(), shape);
    return TRIREME_OK;
  });
}

trireme_status trireme_checkpoint_read(const trireme_checkpoint* c, const char* name,
                                       const char* state, float* values, int64_t count) {
  return Guard([&]() -> trireme_status {
    if (c == nullptr) return Null("checkpoint");
    if (name == nullptr) return Null("name");
    if (state == nullptr) return Null("state");
    if (values == nullptr) return Null("values");
    absl::StatusOr<std::vector<float>> t = trireme::checkpoint::ReadTensor(c->dir, name, state);
    if (!t.ok()) return Fail(t.status());
    if (static_cast<int64_t>(t->size()) != count) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has ", t->size(), " elements; count is ", count)));
    }
    std::memcpy(values, t->data(), t->size() * sizeof(float));
    return TRIREME_OK;
  });
}

// --------------------------------------------------------------- stats

const char* trireme_memory_category_name(int category) {
  if (category < 0 || category >= trireme::kNumMemCategories) return nullptr;
  return trireme::MemCategoryName(static_cast<trireme::MemCategory>(category));
}

void trireme_memory_stats_init(trireme_memory_stats* s) {
  if (s == nullptr) return;
  *s = trireme_memory_stats{};
  s->struct_size = sizeof(*s);
}

trireme_status trireme_engine_memory(const trireme_engine* e, trireme_memory_stats* out) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        if (trireme_status s = CheckSize(out, kMemoryV1, "out", "trireme_memory_stats_init", e);
            s != TRIREME_OK) {
          return s;
        }
        static_assert(TRIREME_MEM_CATEGORIES == trireme::kNumMemCategories, "categories");
        const trireme::MemoryTracker::Snapshot snap = e->tracker->snapshot();
        trireme_memory_stats full{};
        for (int c = 0; c < trireme::kNumMemCategories; ++c) {
          full.current[c] = snap.current[c];
          full.peak[c] = snap.peak[c];
        }
        full.total_current = snap.total_current;
        full.total_peak = snap.total_peak;
        CopyOut(full, out);
        return TRIREME_OK;
      },
      e);
}

void trireme_traffic_stats_init(trireme_traffic_stats* s) {
  if (s == nullptr) return;
  *s = trireme_traffic_stats{};
  s->struct_size = sizeof(*s);
}

trireme_status trireme_comm_traffic(const trireme_comm* comm, trireme_traffic_stats* out) {
  return Guard([&]() -> trireme_status {
    if (comm == nullptr || comm->comm == nullptr) return Null("comm");
    return Traffic(*comm->comm, out, nullptr);
  });
}

trireme_status trireme_engine_traffic(const trireme_engine* e, trireme_traffic_stats* out) {
  return Guard(
      [&]() -> trireme_status {
        if (e == nullptr) return Null("engine");
        return Traffic(*e->dp->comm, out, e);
      },
      e);
}

}  // extern "C"
