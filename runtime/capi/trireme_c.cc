// The C API (include/trireme/trireme.h) over the ZeRO engine and the
// communicators. WIP (#18): worlds (threads), registration, the engine, its
// hooks, views and step, errors; not yet mpi, checkpoints or stats.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/zero/engine.h"
#include "trireme/trireme.h"

struct trireme_comm {
  trireme::Communicator* comm = nullptr;  // not owned (a threads rank's)
};

struct trireme_units {
  std::vector<trireme::UnitSpec> units;
};

struct trireme_engine {
  std::unique_ptr<trireme::MemoryTracker> tracker;
  std::unique_ptr<trireme::ZeroEngine> engine;
  mutable std::mutex mu;
  mutable std::string last_error;  // the handle's (any thread's) last failure
};

namespace {

thread_local std::string t_last_error;

trireme_status Code(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return TRIREME_OK;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return TRIREME_INVALID_ARGUMENT;
    case absl::StatusCode::kFailedPrecondition:
      return TRIREME_FAILED_PRECONDITION;
    case absl::StatusCode::kNotFound:
      return TRIREME_NOT_FOUND;
    case absl::StatusCode::kDataLoss:
      return TRIREME_DATA_LOSS;
    case absl::StatusCode::kDeadlineExceeded:
      return TRIREME_DEADLINE_EXCEEDED;
    case absl::StatusCode::kResourceExhausted:
      return TRIREME_RESOURCE_EXHAUSTED;
    case absl::StatusCode::kUnavailable:
      return TRIREME_UNAVAILABLE;
    default:
      return TRIREME_INTERNAL;
  }
}

// Records `s` as the thread's (and the handle's) last error; returns its code.
trireme_status Fail(const absl::Status& s, const trireme_engine* e = nullptr) {
  if (s.ok()) return TRIREME_OK;
  t_last_error = std::string(s.message());
  if (e != nullptr) {
    std::lock_guard<std::mutex> lock(e->mu);
    e->last_error = t_last_error;
  }
  return Code(s);
}

trireme_status Null(const char* what) {
  return Fail(absl::InvalidArgumentError(absl::StrCat(what, " is NULL")));
}

// A size-prefixed struct from the caller: at least as large as version 1's.
template <typename T>
bool SizeOk(const T* p, size_t v1_size) {
  return p != nullptr && p->struct_size >= v1_size;
}

trireme_dtype FromDType(trireme::DType d) {
  return d == trireme::DType::kBF16  ? TRIREME_BF16
         : d == trireme::DType::kF16 ? TRIREME_F16
                                     : TRIREME_F32;
}

absl::StatusOr<trireme::DType> ToDType(trireme_dtype d) {
  switch (d) {
    case TRIREME_F32:
      return trireme::DType::kF32;
    case TRIREME_BF16:
      return trireme::DType::kBF16;
    case TRIREME_F16:
      return trireme::DType::kF16;
  }
  return absl::InvalidArgumentError(absl::StrCat("dtype ", static_cast<int>(d),
                                                 " is not one of "
                                                 "TRIREME_F32, TRIREME_BF16, TRIREME_F16"));
}

}  // namespace

extern "C" {

int trireme_version(void) { return TRIREME_ABI_VERSION; }
const char* trireme_version_string(void) { return "0.17.0"; }
const char* trireme_last_error(void) { return t_last_error.c_str(); }

trireme_status trireme_run_threads(int ranks, trireme_rank_fn fn, void* user) {
  if (fn == nullptr) return Null("fn");
  if (ranks < 1) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("ranks (", ranks, ") must be >= 1")));
  }
  absl::Status s = trireme::RunOnRanks(ranks, [&](trireme::Communicator& c) -> absl::Status {
    trireme_comm comm{&c};
    const trireme_status code = fn(&comm, user);
    if (code == TRIREME_OK) return absl::OkStatus();
    return absl::UnknownError(
        absl::StrCat("rank ", c.rank(), "'s function returned ", code, ": ", t_last_error));
  });
  return Fail(s);
}

int trireme_comm_rank(const trireme_comm* comm) {
  return comm == nullptr || comm->comm == nullptr ? -1 : comm->comm->rank();
}
int trireme_comm_size(const trireme_comm* comm) {
  return comm == nullptr || comm->comm == nullptr ? -1 : comm->comm->size();
}

trireme_status trireme_units_create(trireme_units** out) {
  if (out == nullptr) return Null("out");
  *out = new trireme_units();
  return TRIREME_OK;
}

trireme_status trireme_units_destroy(trireme_units* units) {
  delete units;
  return TRIREME_OK;
}

trireme_status trireme_units_add_unit(trireme_units* units, const char* name, int* index) {
  if (units == nullptr) return Null("units");
  if (name == nullptr) return Null("name");
  units->units.push_back({name, {}});
  if (index != nullptr) *index = static_cast<int>(units->units.size()) - 1;
  return TRIREME_OK;
}

trireme_status trireme_units_add_param(trireme_units* units, int unit, const char* name, int ndim,
                                       const int64_t* shape, int flags) {
  if (units == nullptr) return Null("units");
  if (name == nullptr) return Null("name");
  if (unit < 0 || unit >= static_cast<int>(units->units.size())) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "': unit ", unit, " of ", units->units.size())));
  }
  if (ndim < 1 || ndim > 8 || shape == nullptr) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "': ndim ", ndim, " (1..8) with a shape")));
  }
  trireme::ParamSpec p;
  p.name = name;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] < 1) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "': dimension ", d, " is ", shape[d])));
    }
    p.shape.push_back(shape[d]);
  }
  p.weight_decay = (flags & TRIREME_PARAM_NO_DECAY) == 0;
  p.requires_grad = (flags & TRIREME_PARAM_FROZEN) == 0;
  units->units[unit].params.push_back(std::move(p));
  return TRIREME_OK;
}

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
}

trireme_status trireme_engine_create(trireme_comm* dp, const trireme_units* units,
                                     const trireme_engine_options* options, trireme_engine** out) {
  if (out == nullptr) return Null("out");
  *out = nullptr;
  if (dp == nullptr || dp->comm == nullptr) return Null("dp");
  if (units == nullptr) return Null("units");
  if (!SizeOk(options, sizeof(trireme_engine_options))) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("options: NULL or struct_size ", options ? options->struct_size : 0, " < ",
                     sizeof(trireme_engine_options), " (call trireme_engine_options_init)")));
  }
  trireme::EngineOptions o;
  o.stage = options->stage;
  auto compute = ToDType(options->compute_dtype);
  if (!compute.ok()) return Fail(compute.status());
  auto grad = ToDType(options->grad_dtype);
  if (!grad.ok()) return Fail(grad.status());
  o.compute_dtype = *compute;
  o.grad_dtype = *grad;
  o.grad_accum = options->grad_accum;
  switch (options->device) {
    case TRIREME_DEVICE_CPU:
      o.device = trireme::Device::Cpu();
      break;
    case TRIREME_DEVICE_CPU_ASYNC:
      o.device = trireme::Device::CpuAsync();
      break;
    case TRIREME_DEVICE_CUDA:
      o.device = trireme::Device::Cuda(options->device_index);
      break;
    default:
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("device ", static_cast<int>(options->device), " is unknown")));
  }
  o.lr.lr = options->lr;
  o.optimizer.weight_decay = options->weight_decay;
  o.optimizer.beta1 = options->beta1;
  o.optimizer.beta2 = options->beta2;
  o.optimizer.eps = options->eps;
  o.clip_norm = options->clip_norm;
  auto e = std::make_unique<trireme_engine>();
  e->tracker = std::make_unique<trireme::MemoryTracker>();
  auto engine = trireme::ZeroEngine::Create(*dp->comm, units->units, o, e->tracker.get());
  if (!engine.ok()) return Fail(engine.status());
  e->engine = *std::move(engine);
  *out = e.release();
  return TRIREME_OK;
}

trireme_status trireme_engine_destroy(trireme_engine* engine) {
  delete engine;
  return TRIREME_OK;
}

const char* trireme_engine_last_error(const trireme_engine* engine) {
  if (engine == nullptr) return "engine is NULL";
  std::lock_guard<std::mutex> lock(engine->mu);
  return engine->last_error.c_str();
}

trireme_status trireme_engine_initialize(trireme_engine* e, trireme_init_fn fn, void* user) {
  if (e == nullptr) return Null("engine");
  if (fn == nullptr) return Null("fn");
  absl::Status s =
      e->engine->Initialize([&](const trireme::ParamInfo& p, float* values) -> absl::Status {
        const trireme_status code = fn(p.name.c_str(), values, p.numel, user);
        if (code == TRIREME_OK) return absl::OkStatus();
        return absl::InvalidArgumentError(
            absl::StrCat("the init function returned ", code, " for parameter '", p.name, "'"));
      });
  return Fail(s, e);
}

#define TRIREME_HOOK(name, method)                   \
  trireme_status name(trireme_engine* e, int unit) { \
    if (e == nullptr) return Null("engine");         \
    return Fail(e->engine->method(unit), e);         \
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

namespace {

trireme_status View(trireme_engine* e, absl::StatusOr<trireme::MutView> v, trireme_view* out) {
  if (!SizeOk(out, sizeof(trireme_view))) {
    return Fail(
        absl::InvalidArgumentError("out: NULL or struct_size too small (trireme_view_init)"), e);
  }
  if (!v.ok()) return Fail(v.status(), e);
  out->data = v->data;
  out->count = v->count;
  out->dtype = FromDType(v->dtype);
  out->device = TRIREME_DEVICE_CPU;
  out->device_index = 0;
  return TRIREME_OK;
}

}  // namespace

trireme_status trireme_engine_param(trireme_engine* e, int unit, int param, trireme_view* out) {
  if (e == nullptr) return Null("engine");
  return View(e, e->engine->Param(unit, param), out);
}

trireme_status trireme_engine_grad(trireme_engine* e, int unit, int param, trireme_view* out) {
  if (e == nullptr) return Null("engine");
  return View(e, e->engine->Grad(unit, param), out);
}

void trireme_step_stats_init(trireme_step_stats* s) {
  if (s == nullptr) return;
  *s = trireme_step_stats{};
  s->struct_size = sizeof(*s);
}

trireme_status trireme_engine_step(trireme_engine* e, trireme_step_stats* out) {
  if (e == nullptr) return Null("engine");
  if (out != nullptr && !SizeOk(out, sizeof(trireme_step_stats))) {
    return Fail(absl::InvalidArgumentError("out: struct_size too small (trireme_step_stats_init)"),
                e);
  }
  absl::StatusOr<trireme::StepStats> st = e->engine->Step();
  if (!st.ok()) return Fail(st.status(), e);
  if (out != nullptr) {
    out->step = st->step;
    out->lr = st->lr;
    out->grad_norm = st->grad_norm;
    out->skipped = st->skipped ? 1 : 0;
  }
  return TRIREME_OK;
}

}  // extern "C"
