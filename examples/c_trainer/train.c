/* The C API from C (WIP #18): a linear least-squares model trained with
 * ZeRO-3 over 4 thread ranks matches the same training on 1 rank; bad use
 * returns an error code with a message. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "trireme/trireme.h"

#define IN 6
#define OUT 3
#define BATCH 8 /* global, split over the ranks */
#define STEPS 5

static int failures = 0;
#define CHECK(cond, ...)                                \
  do {                                                  \
    if (!(cond)) {                                      \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
      printf(__VA_ARGS__);                              \
      printf(" (last error: %s)\n", trireme_last_error()); \
      ++failures;                                       \
    }                                                   \
  } while (0)

static float X(int n, int i) { return (float)sin(0.7 * n + 1.3 * i); }
static float Y(int n, int o) { return (float)cos(0.5 * n - 0.9 * o); }

static trireme_status Init(const char* name, float* v, int64_t count, void* user) {
  int64_t i;
  (void)name;
  (void)user;
  for (i = 0; i < count; ++i) v[i] = 0.01f * (float)(i % 7) - 0.02f;
  return TRIREME_OK;
}

struct Run {
  int ranks;
  float final_w[IN * OUT];
};

static trireme_status Train(trireme_comm* comm, void* user) {
  struct Run* run = (struct Run*)user;
  const int rank = trireme_comm_rank(comm), size = trireme_comm_size(comm);
  const int per = BATCH / size;
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  trireme_step_stats st;
  trireme_view w, g;
  int64_t shape[2] = {IN, OUT};
  int unit = -1, step, n, i, j;
  trireme_status s;
  if ((s = trireme_units_create(&units)) != TRIREME_OK) return s;
  if ((s = trireme_units_add_unit(units, "linear", &unit)) != TRIREME_OK) return s;
  if ((s = trireme_units_add_param(units, unit, "w", 2, shape, 0)) != TRIREME_OK) return s;
  trireme_engine_options_init(&o);
  o.stage = 3;
  o.lr = 0.05f;
  if ((s = trireme_engine_create(comm, units, &o, &e)) != TRIREME_OK) return s;
  trireme_units_destroy(units);
  if ((s = trireme_engine_initialize(e, Init, NULL)) != TRIREME_OK) return s;
  trireme_view_init(&w);
  trireme_view_init(&g);
  trireme_step_stats_init(&st);
  for (step = 0; step < STEPS; ++step) {
    float pred[BATCH][OUT];
    if ((s = trireme_engine_pre_forward(e, unit)) != TRIREME_OK) return s;
    if ((s = trireme_engine_param(e, unit, 0, &w)) != TRIREME_OK) return s;
    for (n = 0; n < per; ++n) {
      const int gn = rank * per + n;
      for (j = 0; j < OUT; ++j) {
        float acc = 0;
        for (i = 0; i < IN; ++i) acc += X(gn, i) * ((float*)w.data)[i * OUT + j];
        pred[n][j] = acc;
      }
    }
    if ((s = trireme_engine_post_forward(e, unit)) != TRIREME_OK) return s;
    if ((s = trireme_engine_pre_backward(e, unit)) != TRIREME_OK) return s;
    if ((s = trireme_engine_grad(e, unit, 0, &g)) != TRIREME_OK) return s;
    /* d/dW of the rank's mean over its samples of sum_j (pred - y)^2 / 2;
     * the engine averages over the ranks. (AdamW is blind to a uniform
     * scale of the gradient: dropping one rank's share, not scaling all,
     * is what this comparison catches -- checked by hand.) */
    for (n = 0; n < per; ++n) {
      const int gn = rank * per + n;
      for (j = 0; j < OUT; ++j) {
        const float d = (pred[n][j] - Y(gn, j)) / per;
        for (i = 0; i < IN; ++i) ((float*)g.data)[i * OUT + j] += X(gn, i) * d;
      }
    }
    if ((s = trireme_engine_post_backward(e, unit)) != TRIREME_OK) return s;
    if ((s = trireme_engine_step(e, &st)) != TRIREME_OK) return s;
  }
  if ((s = trireme_engine_pre_forward(e, unit)) != TRIREME_OK) return s;
  if ((s = trireme_engine_param(e, unit, 0, &w)) != TRIREME_OK) return s;
  if (rank == 0) memcpy(run->final_w, w.data, sizeof(run->final_w));
  if ((s = trireme_engine_post_forward(e, unit)) != TRIREME_OK) return s;
  return trireme_engine_destroy(e);
}

static trireme_status BadUse(trireme_comm* comm, void* user) {
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  trireme_view v;
  int64_t shape[1] = {4};
  int unit = 0;
  (void)user;
  CHECK(trireme_engine_pre_forward(NULL, 0) == TRIREME_INVALID_ARGUMENT, "null engine");
  CHECK(strstr(trireme_last_error(), "engine is NULL") != NULL, "message names the handle");
  trireme_units_create(&units);
  trireme_units_add_unit(units, "u", &unit);
  CHECK(trireme_units_add_param(units, 5, "p", 1, shape, 0) == TRIREME_INVALID_ARGUMENT,
        "a unit that does not exist");
  CHECK(strstr(trireme_last_error(), "unit 5 of 1") != NULL, "message names the numbers");
  shape[0] = 0;
  CHECK(trireme_units_add_param(units, 0, "p", 1, shape, 0) == TRIREME_INVALID_ARGUMENT,
        "a zero dimension");
  shape[0] = 4;
  CHECK(trireme_units_add_param(units, 0, "p", 1, shape, 0) == TRIREME_OK, "a good param");
  memset(&o, 0, sizeof(o));
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_INVALID_ARGUMENT,
        "options without struct_size");
  CHECK(strstr(trireme_last_error(), "struct_size") != NULL, "message names struct_size");
  trireme_engine_options_init(&o);
  CHECK(trireme_engine_create(comm, units, &o, &e) == TRIREME_OK, "create");
  trireme_units_destroy(units);
  CHECK(trireme_engine_post_forward(e, 0) != TRIREME_OK, "post_forward before pre_forward");
  CHECK(strlen(trireme_engine_last_error(e)) > 0, "the handle keeps the message");
  trireme_view_init(&v);
  v.struct_size = 1;
  CHECK(trireme_engine_param(e, 0, 0, &v) == TRIREME_INVALID_ARGUMENT, "a too small view");
  CHECK(trireme_engine_pre_forward(e, 7) != TRIREME_OK, "a unit out of range");
  trireme_engine_destroy(e);
  return TRIREME_OK;
}

int main(void) {
  struct Run one, four;
  int i;
  CHECK(trireme_version() == TRIREME_ABI_VERSION, "version");
  one.ranks = 1;
  four.ranks = 4;
  CHECK(trireme_run_threads(1, Train, &one) == TRIREME_OK, "1 rank");
  CHECK(trireme_run_threads(4, Train, &four) == TRIREME_OK, "4 ranks");
  for (i = 0; i < IN * OUT; ++i) {
    CHECK(fabsf(one.final_w[i] - four.final_w[i]) <= 1e-6f * (1 + fabsf(one.final_w[i])),
          "w[%d]: 1 rank %.8g, 4 ranks %.8g", i, one.final_w[i], four.final_w[i]);
  }
  CHECK(fabsf(one.final_w[0] + 0.02f) > 1e-4f, "w[0] moved from its initial -0.02: %.8g",
        one.final_w[0]);
  CHECK(trireme_run_threads(0, Train, &one) == TRIREME_INVALID_ARGUMENT, "0 ranks");
  CHECK(trireme_run_threads(2, NULL, NULL) == TRIREME_INVALID_ARGUMENT, "a NULL function");
  CHECK(trireme_run_threads(1, BadUse, NULL) == TRIREME_OK, "bad use");
  printf(failures == 0 ? "PASS\n" : "%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
