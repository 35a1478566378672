/* The C API from C99 (built with -std=c99 -Wall -Wextra -Werror -pedantic):
 *  - ZeRO-3 over 4 thread ranks equals 1 rank (a linear model), and the
 *    same on the asynchronous CPU device equals the synchronous one;
 *  - a dp=2 x tp=2 grid (stage 3, a column-split weight and a TP-replicated
 *    bias, the grad norm clipped over both) equals 1 rank; its checkpoint
 *    (placed by a layout callback) loads onto
 *    1 rank at stage 1, which then continues exactly as the grid does; it also
 *    reads offline;
 *  - bad use returns a code and a message naming the thing and the numbers:
 *    null handles, wrong sizes, hooks out of order, a step before the
 *    parameters exist, a truncated checkpoint (the engine untouched). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trireme/trireme.h"

static int failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
      printf(__VA_ARGS__);                                 \
      printf(" (last error: %s)\n", trireme_last_error()); \
      ++failures;                                          \
    }                                                      \
  } while (0)
#define TRY(call)                                                                                  \
  do {                                                                                             \
    trireme_status s_ = (call);                                                                    \
    if (s_ != TRIREME_OK) {                                                                        \
      printf("FAIL %s:%d: %s: %d %s\n", __FILE__, __LINE__, #call, (int)s_, trireme_last_error()); \
      ++failures;                                                                                  \
      return s_;                                                                                   \
    }                                                                                              \
  } while (0)

static char g_dir[512];

/* ------------------------------------------------ parity: 4 ranks == 1 */

#define IN 6
#define OUT 3
#define BATCH 8
#define STEPS 5

static float X(int n, int i) { return (float)sin(0.7 * n + 1.3 * i); }
static float Y(int n, int o) { return (float)cos(0.5 * n - 0.9 * o); }

static trireme_status Init(const char* name, float* v, int64_t count, void* user) {
  int64_t i;
  (void)name;
  (void)user;
  for (i = 0; i < count; ++i) v[i] = 0.01f * (float)(i % 7) - 0.02f;
  return TRIREME_OK;
}

struct LinearRun {
  trireme_device_kind device;
  float w[IN * OUT];
};

/* On cpu_async the hooks only enqueue: synchronize before the host touches
 * a view. */
#define READY(call)                                                                  \
  do {                                                                               \
    TRY(call);                                                                       \
    if (run->device == TRIREME_DEVICE_CPU_ASYNC) TRY(trireme_engine_synchronize(e)); \
  } while (0)

static trireme_status Linear(trireme_comm* comm, void* user) {
  struct LinearRun* run = (struct LinearRun*)user;
  const int rank = trireme_comm_rank(comm), per = BATCH / trireme_comm_size(comm);
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  trireme_view w, g;
  int64_t shape[2] = {IN, OUT};
  int unit = -1, step, n, i, j;
  TRY(trireme_units_create(&units));
  TRY(trireme_units_add_unit(units, "linear", &unit));
  TRY(trireme_units_add_param(units, unit, "w", 2, shape, 0));
  trireme_engine_options_init(&o);
  o.lr = 0.05f;
  o.device = run->device;
  TRY(trireme_engine_create(comm, units, &o, &e));
  trireme_units_destroy(units);
  TRY(trireme_engine_initialize(e, Init, NULL));
  trireme_view_init(&w);
  trireme_view_init(&g);
  for (step = 0; step < STEPS; ++step) {
    float pred[BATCH][OUT];
    READY(trireme_engine_pre_forward(e, unit));
    TRY(trireme_engine_param(e, unit, 0, &w));
    CHECK(w.device == run->device, "the view's device %d", (int)w.device);
    for (n = 0; n < per; ++n) {
      for (j = 0; j < OUT; ++j) {
        float acc = 0;
        for (i = 0; i < IN; ++i) acc += X(rank * per + n, i) * ((float*)w.data)[i * OUT + j];
        pred[n][j] = acc;
      }
    }
    TRY(trireme_engine_post_forward(e, unit));
    READY(trireme_engine_pre_backward(e, unit));
    TRY(trireme_engine_grad(e, unit, 0, &g));
    for (n = 0; n < per; ++n) {
      for (j = 0; j < OUT; ++j) {
        const float d = (pred[n][j] - Y(rank * per + n, j)) / per;
        for (i = 0; i < IN; ++i) ((float*)g.data)[i * OUT + j] += X(rank * per + n, i) * d;
      }
    }
    TRY(trireme_engine_post_backward(e, unit));
    TRY(trireme_engine_step(e, NULL));
  }
  {
    float full[IN * OUT]; /* every rank gathers; rank 0 reports */
    TRY(trireme_engine_gather_param(e, "w", full, IN * OUT));
    if (rank == 0) memcpy(run->w, full, sizeof(full));
  }
  {
    const int size = trireme_comm_size(comm);
    float v[2];
    v[0] = (float)(rank + 1);
    v[1] = (float)rank;
    TRY(trireme_comm_all_reduce(comm, v, 2, TRIREME_REDUCE_SUM));
    CHECK(v[0] == size * (size + 1) / 2 && v[1] == size * (size - 1) / 2, "sum: %g %g", v[0], v[1]);
    v[0] = (float)rank;
    TRY(trireme_comm_all_reduce(comm, v, 1, TRIREME_REDUCE_MAX));
    CHECK(v[0] == size - 1, "max: %g", v[0]);
    CHECK(trireme_comm_all_reduce(comm, v, 1, (trireme_reduce_op)7) == TRIREME_INVALID_ARGUMENT,
          "op 7");
  }
  return trireme_engine_destroy(e);
}

/* ------------------------------- a TP x DP checkpoint loaded on 1 rank */

#define R 6
#define C 4 /* w: [R, C], split by columns over tp = 2; b: [3], replicated */

static float WInit(int i, int j) { return 0.1f * (float)(i * C + j) - 0.5f; }
/* The gradient of global element k of a tensor, from its value: the same
 * function on every layout, so any grid takes the same steps. */
static float GradOf(float value, int k) { return 0.3f * value + 0.01f * (float)(k % 5) - 0.02f; }

struct Tp {
  int tp, tp_rank, step0, steps, save_at, stage;
  float w[R * C], b[3]; /* the global values at the end (gathered) */
};

static trireme_status TpLayout(const char* name, int ndim, const int64_t* shape,
                               trireme_layout* out, void* user) {
  const struct Tp* t = (const struct Tp*)user;
  (void)shape;
  if (strcmp(name, "w") == 0 && ndim == 2) {
    out->global_shape[1] = C;
    out->offset[1] = (C / t->tp) * t->tp_rank;
  } else {
    out->owner = t->tp_rank == 0; /* the bias is the same on every TP rank */
  }
  return TRIREME_OK;
}

static trireme_status TpInit(const char* name, float* v, int64_t count, void* user) {
  const struct Tp* t = (const struct Tp*)user;
  const int cols = C / t->tp;
  int64_t k;
  for (k = 0; k < count; ++k) {
    v[k] = name[0] == 'w' ? WInit((int)(k / cols), (int)(k % cols) + cols * t->tp_rank)
                          : 0.2f * (float)k;
  }
  return TRIREME_OK;
}

/* Trains params w (local columns) and b for t->steps steps from step0. */
static trireme_status TpTrain(trireme_comm* world, void* user) {
  struct Tp t = *(struct Tp*)user;
  trireme_grid* grid = NULL;
  trireme_comm *dp = NULL, *tp = NULL;
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  trireme_view v;
  int64_t wshape[2], bshape[1] = {3}, loaded = -1;
  float full[R * C];
  int step, p, i, j;
  TRY(trireme_grid_create(world, -1, t.tp, 1, &grid));
  TRY(trireme_grid_group(grid, TRIREME_AXIS_DP, &dp));
  TRY(trireme_grid_group(grid, TRIREME_AXIS_TP, &tp));
  t.tp_rank = trireme_comm_rank(tp);
  wshape[0] = R;
  wshape[1] = C / t.tp;
  TRY(trireme_units_create(&units));
  TRY(trireme_units_add_unit(units, "layer", NULL));
  TRY(trireme_units_add_param(units, 0, "w", 2, wshape, TRIREME_PARAM_TP_SPLIT));
  TRY(trireme_units_add_param(units, 0, "b", 1, bshape, TRIREME_PARAM_NO_DECAY));
  trireme_engine_options_init(&o);
  o.stage = t.stage;
  o.lr = 0.1f;
  o.weight_decay = 0.05f;
  o.clip_norm = 0.5f; /* active: the norm must span both TP halves of w */
  TRY(trireme_engine_create(dp, units, &o, &e));
  trireme_units_destroy(units);
  if (t.step0 == 0) {
    TRY(trireme_engine_initialize(e, TpInit, &t));
  } else {
    TRY(trireme_engine_load(e, g_dir, t.tp > 1 ? TpLayout : NULL, &t, &loaded));
    CHECK(loaded == t.step0, "loaded step %ld, expected %d", (long)loaded, t.step0);
  }
  trireme_view_init(&v);
  for (step = t.step0; step < t.step0 + t.steps; ++step) {
    TRY(trireme_engine_pre_forward(e, 0));
    TRY(trireme_engine_post_forward(e, 0));
    TRY(trireme_engine_pre_backward(e, 0));
    for (p = 0; p < 2; ++p) {
      float* value;
      float* grad;
      TRY(trireme_engine_param(e, 0, p, &v));
      value = (float*)v.data;
      TRY(trireme_engine_grad(e, 0, p, &v));
      grad = (float*)v.data;
      for (i = 0; i < (p == 0 ? R : 1); ++i) {
        for (j = 0; j < (p == 0 ? C / t.tp : 3); ++j) {
          const int local = i * (C / t.tp) * (p == 0) + j;
          const int global = p == 0 ? i * C + j + (C / t.tp) * t.tp_rank : j;
          grad[local] += GradOf(value[local], global);
        }
      }
    }
    TRY(trireme_engine_post_backward(e, 0));
    TRY(trireme_engine_step(e, NULL));
    if (step + 1 == t.save_at) TRY(trireme_engine_save(e, g_dir, step + 1, TpLayout, &t));
  }
  /* The global values: rank (dp 0, tp 0) assembles w from the TP ranks'
   * gathered columns (a TP all-gather done by hand through the files would
   * be more code; the threads share memory, so each TP rank writes its
   * columns into the caller's struct). */
  TRY(trireme_engine_gather_param(e, "w", full, R * (C / t.tp)));
  if (trireme_comm_rank(dp) == 0) {
    for (i = 0; i < R; ++i) {
      for (j = 0; j < C / t.tp; ++j) {
        ((struct Tp*)user)->w[i * C + j + (C / t.tp) * t.tp_rank] = full[i * (C / t.tp) + j];
      }
    }
    if (t.tp_rank == 0) TRY(trireme_engine_gather_param(e, "b", ((struct Tp*)user)->b, 3));
  }
  if (t.tp_rank != 0 || trireme_comm_rank(dp) != 0) {
    TRY(trireme_engine_gather_param(e, "b", full, 3));
  }
  TRY(trireme_engine_destroy(e));
  return trireme_grid_destroy(grid);
}

static void CheckpointAcrossGrids(void) {
  struct Tp grid, one, cont, ref;
  trireme_checkpoint* ck = NULL;
  int64_t step = -1, shape[8];
  int n = -1, ndim = -1, k;
  const char* name = NULL;
  float w[R * C];
  memset(&grid, 0, sizeof(grid));
  grid.tp = 2;
  grid.steps = 3;
  grid.save_at = 2;
  grid.stage = 3;
  one = grid;
  one.steps = 2;
  one.save_at = -1;
  cont = grid;
  cont.tp = 1;
  cont.stage = 1;
  cont.step0 = 2;
  cont.steps = 1;
  cont.save_at = -1;
  ref = cont;
  ref.step0 = 0;
  ref.steps = 3;
  CHECK(trireme_run_threads(4, TpTrain, &grid) == TRIREME_OK, "dp=2 x tp=2, stage 3");
  CHECK(trireme_run_threads(1, TpTrain, &ref) == TRIREME_OK, "1 rank, 3 steps");
  for (k = 0; k < R * C; ++k) {
    CHECK(fabsf(grid.w[k] - ref.w[k]) <= 1e-6f * (1 + fabsf(ref.w[k])),
          "w[%d] after step 3: grid %.8g, 1 rank %.8g", k, grid.w[k], ref.w[k]);
  }
  CHECK(trireme_run_threads(1, TpTrain, &cont) == TRIREME_OK, "1 rank, stage 1, from step 2");
  for (k = 0; k < R * C; ++k) {
    CHECK(fabsf(grid.w[k] - cont.w[k]) <= 1e-6f * (1 + fabsf(grid.w[k])),
          "w[%d] after step 3: grid %.8g, resumed on 1 rank %.8g", k, grid.w[k], cont.w[k]);
  }
  for (k = 0; k < 3; ++k) {
    CHECK(fabsf(grid.b[k] - cont.b[k]) <= 1e-6f * (1 + fabsf(grid.b[k])),
          "b[%d] after step 3: grid %.8g, resumed %.8g", k, grid.b[k], cont.b[k]);
  }
  CHECK(fabsf(grid.w[5] - WInit(1, 1)) > 1e-3f, "w moved: %.8g", grid.w[5]);
  /* Offline: what the grid saved at step 2 equals what it held then. */
  CHECK(trireme_run_threads(4, TpTrain, &one) == TRIREME_OK, "the grid again, 2 steps");
  CHECK(trireme_checkpoint_open(g_dir, &ck) == TRIREME_OK, "open %s", g_dir);
  if (ck == NULL) return;
  CHECK(trireme_checkpoint_info(ck, &step, &n) == TRIREME_OK && step == 2 && n == 2,
        "step %ld, %d tensors", (long)step, n);
  CHECK(trireme_checkpoint_tensor(ck, 1, &name, &ndim, shape) == TRIREME_OK, "tensor 1");
  CHECK(name != NULL && strcmp(name, "w") == 0 && ndim == 2 && shape[0] == R && shape[1] == C,
        "tensor 1: %s, %d dims", name ? name : "(null)", ndim);
  CHECK(trireme_checkpoint_read(ck, "w", "master", w, R * C) == TRIREME_OK, "read w");
  for (k = 0; k < R * C; ++k) {
    CHECK(w[k] == one.w[k], "saved w[%d] %.8g, held %.8g", k, w[k], one.w[k]);
  }
  CHECK(trireme_checkpoint_read(ck, "w", "master", w, 5) == TRIREME_INVALID_ARGUMENT,
        "a wrong count");
  CHECK(strstr(trireme_last_error(), "24 elements; count is 5") != NULL, "names the numbers");
  CHECK(trireme_checkpoint_tensor(ck, 2, &name, &ndim, shape) == TRIREME_INVALID_ARGUMENT,
        "index 2 of 2");
  trireme_checkpoint_close(ck);
}

/* ------------------------------------------------------------- bad use */

static trireme_status FailingInit(const char* name, float* v, int64_t count, void* user) {
  (void)name;
  (void)v;
  (void)count;
  (void)user;
  return TRIREME_INTERNAL;
}

static trireme_status BadLayout(const char* name, int ndim, const int64_t* shape,
                                trireme_layout* out, void* user) {
  (void)name;
  (void)ndim;
  (void)user;
  out->offset[0] = shape[0]; /* the block lies past the global tensor */
  return TRIREME_OK;
}

static trireme_status BadUse(trireme_comm* comm, void* user) {
  trireme_units *units = NULL, *empty = NULL;
  trireme_engine* e = NULL;
  trireme_grid* grid = NULL;
  trireme_engine_options o;
  trireme_view v;
  trireme_memory_stats m;
  char path[600];
  float before[4], after[4];
  int64_t shape[1] = {4};
  long size;
  char* bytes;
  FILE* f;
  int unit = 0;
  (void)user;
  CHECK(trireme_engine_pre_forward(NULL, 0) == TRIREME_INVALID_ARGUMENT, "null engine");
  CHECK(strstr(trireme_last_error(), "engine is NULL") != NULL, "names the handle");
  CHECK(trireme_engine_create(NULL, NULL, NULL, &e) == TRIREME_INVALID_ARGUMENT, "null comm");
  CHECK(trireme_comm_rank(NULL) == -1, "rank of NULL");
  CHECK(trireme_comm_destroy(comm) == TRIREME_INVALID_ARGUMENT, "a threads rank's comm");
  CHECK(trireme_grid_create(comm, 2, 2, 1, &grid) == TRIREME_INVALID_ARGUMENT, "grid 2x2x1 of 1");
  CHECK(strstr(trireme_last_error(), "world size 1 is not divisible by tp (2) x pp (1)") != NULL,
        "names the numbers");
  CHECK(trireme_comm_destroy(NULL) == TRIREME_OK && trireme_grid_destroy(NULL) == TRIREME_OK &&
            trireme_engine_destroy(NULL) == TRIREME_OK,
        "destroying NULL is nothing to do");
  CHECK(trireme_units_add_unit(NULL, "u", &unit) == TRIREME_INVALID_ARGUMENT, "null units");
  CHECK(trireme_units_create(&empty) == TRIREME_OK &&
            trireme_units_add_unit(empty, "", &unit) == TRIREME_INVALID_ARGUMENT,
        "an empty unit name");
  CHECK(strstr(trireme_last_error(), "unit name is empty") != NULL, "says so");
  trireme_units_destroy(empty);
  trireme_units_create(&units);
  trireme_units_add_unit(units, "u", &unit);
  CHECK(trireme_units_add_param(units, 5, "p", 1, shape, 0) == TRIREME_INVALID_ARGUMENT,
        "a unit that does not exist");
  CHECK(strstr(trireme_last_error(), "unit 5 of 1") != NULL, "names the numbers");
  shape[0] = 0;
  CHECK(trireme_units_add_param(units, 0, "p", 1, shape, 0) == TRIREME_INVALID_ARGUMENT,
        "a zero dimension");
  CHECK(strstr(trireme_last_error(), "dimension 0 is 0") != NULL, "names the dimension");
  shape[0] = 4;
  CHECK(trireme_units_add_param(units, 0, "p", 9, shape, 0) == TRIREME_INVALID_ARGUMENT, "9 dims");
  CHECK(trireme_units_add_param(units, 0, "p", 1, shape, 64) == TRIREME_INVALID_ARGUMENT,
        "flag 64");
  CHECK(strstr(trireme_last_error(), "unknown flags 0x40") != NULL, "names the flag");
  CHECK(trireme_units_add_param(units, 0, "p", 1, shape, 0) == TRIREME_OK, "a good param");
  memset(&o, 0, sizeof(o));
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT,
        "options without struct_size");
  CHECK(strstr(trireme_last_error(), "struct_size") != NULL, "names struct_size");
  trireme_engine_options_init(&o);
  trireme_units_create(&empty);
  CHECK(trireme_engine_create(comm, empty, &o, &e) == TRIREME_INVALID_ARGUMENT, "no units");
  CHECK(strstr(trireme_last_error(), "no units") != NULL, "says so");
  trireme_units_destroy(empty);
  o.stage = 4;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "stage 4");
  o.stage = 3;
  o.device = (trireme_device_kind)7;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "device 7");
  o.device = TRIREME_DEVICE_CPU;
  o.compute_dtype = (trireme_dtype)-3;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "dtype -3");
  CHECK(strstr(trireme_last_error(), "compute_dtype -3") != NULL, "names it");
  o.compute_dtype = TRIREME_F32;
  o.optimizer = (trireme_optimizer)5;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "optimizer 5");
  CHECK(strstr(trireme_last_error(), "optimizer 5") != NULL, "names it");
  o.optimizer = TRIREME_SGD;
  o.lr_schedule = TRIREME_LR_WARMUP_COSINE;
  o.warmup_steps = 10;
  o.total_steps = 5;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT,
        "total_steps 5 < warmup_steps 10");
  trireme_engine_options_init(&o);
  o.kernel_threads = 0;
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "0 threads");
  trireme_engine_options_init(&o);
  o.clip_norm = (float)(0.0 / 0.0);
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT, "clip NaN");
  CHECK(strstr(trireme_last_error(), "clip_norm is nan: not finite") != NULL, "names it: %s",
        trireme_last_error());
  trireme_engine_options_init(&o);
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_OK, "create");
  trireme_units_destroy(units);
  /* Before any parameter values: hooks and step refuse. */
  CHECK(trireme_engine_step(e, NULL) == TRIREME_FAILED_PRECONDITION, "a step before initialize");
  CHECK(strstr(trireme_engine_last_error(e), "trireme_engine_initialize") != NULL,
        "the handle's message says what to call");
  CHECK(trireme_engine_pre_forward(e, 0) == TRIREME_FAILED_PRECONDITION, "a hook before init");
  CHECK(trireme_engine_initialize(e, FailingInit, NULL) == TRIREME_INTERNAL, "its code comes back");
  CHECK(strstr(trireme_last_error(), "parameter 'p'") != NULL, "names the parameter");
  CHECK(trireme_engine_initialize(e, Init, NULL) == TRIREME_OK, "initialize");
  CHECK(trireme_engine_post_forward(e, 0) == TRIREME_FAILED_PRECONDITION,
        "post_forward before pre_forward");
  CHECK(strstr(trireme_engine_last_error(e), "PostForward(unit 'u') while it is") != NULL,
        "the handle keeps the message, naming the hook and the unit: %s",
        trireme_engine_last_error(e));
  /* Another failure on this thread (not on e) changes the thread's message,
   * not the engine's. */
  CHECK(trireme_units_add_unit(NULL, "x", NULL) == TRIREME_INVALID_ARGUMENT, "null units");
  CHECK(strstr(trireme_last_error(), "units is NULL") != NULL, "the thread's message");
  CHECK(strstr(trireme_engine_last_error(e), "PostForward(unit 'u')") != NULL,
        "the engine's message is its own: %s", trireme_engine_last_error(e));
  trireme_view_init(&v);
  v.struct_size = 1;
  CHECK(trireme_engine_param(e, 0, 0, &v) == TRIREME_INVALID_ARGUMENT, "a too small view");
  CHECK(trireme_engine_pre_forward(e, 7) == TRIREME_INVALID_ARGUMENT, "a unit out of range");
  CHECK(strstr(trireme_last_error(), "unit 7 does not exist (1 units)") != NULL, "names it");
  CHECK(trireme_engine_gather_param(e, "p", before, 3) == TRIREME_INVALID_ARGUMENT, "count 3");
  CHECK(strstr(trireme_last_error(), "has 4 elements; count is 3") != NULL, "names the counts");
  CHECK(trireme_engine_gather_param(e, "nope", before, 4) == TRIREME_NOT_FOUND, "no such name");
  m.struct_size = 8;
  CHECK(trireme_engine_memory(e, &m) == TRIREME_INVALID_ARGUMENT, "a too small stats struct");
  CHECK(strstr(trireme_last_error(), "struct_size 8 <") != NULL, "names the size");
  {
    trireme_step_stats st;
    trireme_traffic_stats t;
    st.struct_size = 4;
    t.struct_size = sizeof(t) - 8; /* short of blocked_seconds */
    CHECK(trireme_engine_step(e, &st) == TRIREME_INVALID_ARGUMENT, "small step stats");
    CHECK(trireme_engine_traffic(e, &t) == TRIREME_INVALID_ARGUMENT, "small traffic stats");
    trireme_traffic_stats_init(&t);
    CHECK(trireme_engine_traffic(e, &t) == TRIREME_OK && t.calls == 0, "1 rank: no traffic");
  }
  trireme_memory_stats_init(&m);
  CHECK(trireme_engine_memory(e, &m) == TRIREME_OK && m.current[2] == 16 && m.total_peak > 0,
        "master holds 4 floats: %ld bytes", (long)m.current[2]);
  CHECK(
      trireme_memory_category_name(3) != NULL && !strcmp(trireme_memory_category_name(3), "optim"),
      "category 3");
  CHECK(trireme_memory_category_name(7) == NULL, "category 7");
  /* Checkpoints: a bad layout, a missing path, a truncated file. */
  sprintf(path, "%s/bad", g_dir);
  CHECK(trireme_engine_save(e, path, 1, BadLayout, NULL) == TRIREME_INVALID_ARGUMENT,
        "a block outside the tensor");
  CHECK(strstr(trireme_last_error(),
               "dim 0: a block of 4 at offset 4 is outside the global size 4") != NULL,
        "names the block");
  CHECK(trireme_engine_load(e, "/nonexistent/ckpt", NULL, NULL, NULL) == TRIREME_NOT_FOUND,
        "a missing checkpoint");
  CHECK(strstr(trireme_last_error(), "/nonexistent/ckpt") != NULL, "names the path");
  sprintf(path, "%s/cut", g_dir);
  CHECK(trireme_engine_save(e, path, 1, NULL, NULL) == TRIREME_OK, "save");
  CHECK(trireme_engine_save(e, path, 1, NULL, NULL) == TRIREME_ALREADY_EXISTS, "step 1 again");
  CHECK(strstr(trireme_last_error(), "never overwritten") != NULL, "says why");
  sprintf(path, "%s/cut/step-00000001/rank-00000.safetensors", g_dir);
  f = fopen(path, "rb");
  CHECK(f != NULL, "open %s", path);
  if (f == NULL) return TRIREME_INTERNAL;
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  bytes = (char*)malloc((size_t)size);
  fseek(f, 0, SEEK_SET);
  CHECK(fread(bytes, 1, (size_t)size, f) == (size_t)size, "read");
  fclose(f);
  f = fopen(path, "wb");
  fwrite(bytes, 1, (size_t)size / 2, f);
  fclose(f);
  free(bytes);
  CHECK(trireme_engine_gather_param(e, "p", before, 4) == TRIREME_OK, "gather");
  sprintf(path, "%s/cut", g_dir);
  CHECK(trireme_engine_load(e, path, NULL, NULL, NULL) == TRIREME_DATA_LOSS, "a truncated file");
  CHECK(strstr(trireme_last_error(), "rank-00000.safetensors") != NULL, "names the file");
  CHECK(trireme_engine_gather_param(e, "p", after, 4) == TRIREME_OK, "gather");
  CHECK(memcmp(before, after, sizeof(before)) == 0, "the engine is untouched");
  trireme_engine_destroy(e);
  return TRIREME_OK;
}

/* ------------------------------------------------------------ lifetimes */

static trireme_status Leaky(trireme_comm* comm, void* user) {
  trireme_grid* grid = NULL;
  (void)user;
  return trireme_grid_create(comm, 1, 1, 1, &grid); /* and returns with it alive */
}

static trireme_status Ordered(trireme_comm* world, void* user) {
  trireme_grid* grid = NULL;
  trireme_comm* dp = NULL;
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  int64_t shape[1] = {5};
  (void)user;
  TRY(trireme_grid_create(world, -1, 1, 1, &grid));
  TRY(trireme_grid_group(grid, TRIREME_AXIS_DP, &dp));
  TRY(trireme_units_create(&units));
  TRY(trireme_units_add_unit(units, "u", NULL));
  TRY(trireme_units_add_param(units, 0, "p", 1, shape, 0));
  trireme_engine_options_init(&o);
  TRY(trireme_engine_create(dp, units, &o, &e));
  trireme_units_destroy(units);
  CHECK(trireme_grid_destroy(grid) == TRIREME_FAILED_PRECONDITION, "a grid an engine uses");
  CHECK(strstr(trireme_last_error(), "1 engine(s)") != NULL, "counts them");
  CHECK(trireme_comm_destroy(dp) == TRIREME_INVALID_ARGUMENT, "a grid's group");
  CHECK(trireme_grid_group(grid, (trireme_axis)9, &dp) == TRIREME_INVALID_ARGUMENT, "axis 9");
  TRY(trireme_engine_destroy(e));
  return trireme_grid_destroy(grid);
}

static void Lifetimes(void) {
  CHECK(trireme_run_threads(2, Ordered, NULL) == TRIREME_OK, "engine, then grid");
  CHECK(trireme_run_threads(1, Leaky, NULL) == TRIREME_FAILED_PRECONDITION,
        "a rank that returns with a grid alive");
  CHECK(strstr(trireme_last_error(), "1 grid(s) or engine(s) still using its communicator") != NULL,
        "says so");
  CHECK(trireme_run_threads(5000, Leaky, NULL) == TRIREME_INVALID_ARGUMENT, "5000 ranks");
}

/* Rank 1 looks for a checkpoint that is not there, rank 0 for one that is:
 * both fail together, promptly (a hang would time the test out). */
static trireme_status LoadWhereOneRankSeesNothing(trireme_comm* comm, void* user) {
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  int64_t shape[1] = {4};
  char path[600];
  trireme_status s;
  (void)user;
  TRY(trireme_units_create(&units));
  TRY(trireme_units_add_unit(units, "u", NULL));
  TRY(trireme_units_add_param(units, 0, "p", 1, shape, 0));
  trireme_engine_options_init(&o);
  TRY(trireme_engine_create(comm, units, &o, &e));
  trireme_units_destroy(units);
  TRY(trireme_engine_initialize(e, Init, NULL));
  sprintf(path, "%s/two", g_dir);
  TRY(trireme_engine_save(e, path, 3, NULL, NULL));
  if (trireme_comm_rank(comm) == 1) sprintf(path, "%s/nowhere", g_dir);
  s = trireme_engine_load(e, path, NULL, NULL, NULL);
  CHECK(s != TRIREME_OK, "rank %d's load: %d", trireme_comm_rank(comm), (int)s);
  CHECK(strstr(trireme_engine_last_error(e), "nowhere") != NULL, "rank %d names the path: %s",
        trireme_comm_rank(comm), trireme_engine_last_error(e));
  return trireme_engine_destroy(e);
}

int main(void) {
  static struct LinearRun one, four, four_async;
  const char* tmp = getenv("TEST_TMPDIR");
  int i;
  sprintf(g_dir, "%s/c_api_test", tmp != NULL ? tmp : "/tmp");
  Lifetimes();
  CHECK(trireme_run_threads(2, LoadWhereOneRankSeesNothing, NULL) == TRIREME_OK,
        "a load only one rank can see");
  four_async.device = TRIREME_DEVICE_CPU_ASYNC;
  CHECK(trireme_run_threads(1, Linear, &one) == TRIREME_OK, "1 rank");
  CHECK(trireme_run_threads(4, Linear, &four) == TRIREME_OK, "4 ranks");
  CHECK(trireme_run_threads(4, Linear, &four_async) == TRIREME_OK, "4 ranks, cpu_async");
  for (i = 0; i < IN * OUT; ++i) {
    CHECK(fabsf(one.w[i] - four.w[i]) <= 1e-6f * (1 + fabsf(one.w[i])),
          "w[%d]: 1 rank %.8g, 4 ranks %.8g", i, one.w[i], four.w[i]);
    CHECK(four.w[i] == four_async.w[i], "w[%d]: cpu %.8g, cpu_async %.8g", i, four.w[i],
          four_async.w[i]);
  }
  CHECK(fabsf(one.w[0] + 0.02f) > 1e-4f, "w[0] moved from -0.02: %.8g", one.w[0]);
  CheckpointAcrossGrids();
  CHECK(trireme_run_threads(0, Linear, &one) == TRIREME_INVALID_ARGUMENT, "0 ranks");
  CHECK(trireme_run_threads(2, NULL, NULL) == TRIREME_INVALID_ARGUMENT, "a NULL function");
  CHECK(trireme_run_threads(1, BadUse, NULL) == TRIREME_OK, "bad use");
  printf(failures == 0 ? "PASS\n" : "%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
