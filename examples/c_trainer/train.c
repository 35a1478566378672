/* A C trainer on Trireme's C API, built outside Bazel:
 *
 *   ./bazelw run //:install -- --prefix=$HOME/trireme
 *   PKG_CONFIG_PATH=$HOME/trireme/lib/pkgconfig make && ./train
 *   (or `make train_static`: the same against libtrireme.a)
 *
 * A two-layer MLP (5 -> 9 tanh -> 3, biases without weight decay), the
 * forward and backward written here in plain C, trained with ZeRO-3 over 4
 * ranks (threads in this process): the engine holds a quarter of every
 * parameter, its gradient and its AdamW state on each rank, gathers a layer's
 * full weights for its forward and backward, and reduce-scatters the
 * gradients. The same training on 1 rank is the reference: the final
 * parameters must agree, and the loss must fall. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "trireme/trireme.h"

#define IN 5
#define HID 9
#define OUT 3
#define BATCH 8 /* global, split evenly over the ranks */
#define STEPS 30
#define MAX_RANKS 4

/* Parameter sizes: w1 [IN, HID], b1 [HID], w2 [HID, OUT], b2 [OUT]. */
static const int64_t kNumel[4] = {IN * HID, HID, HID* OUT, OUT};
static const char* const kName[4] = {"w1", "b1", "w2", "b2"};

static float X(int n, int i) { return (float)sin(0.7 * n + 1.3 * i); }
static float Y(int n, int o) { return (float)cos(0.5 * n - 0.9 * o); }

static trireme_status Init(const char* name, float* v, int64_t count, void* user) {
  const float scale = name[0] == 'b' ? 0.0f : (name[1] == '1' ? 0.4f : 0.3f);
  int64_t i;
  (void)user;
  for (i = 0; i < count; ++i) v[i] = scale * (float)sin(1.7 * (double)i + (name[1] - '0'));
  return TRIREME_OK;
}

struct Run {
  int ranks;
  double loss[MAX_RANKS][STEPS]; /* each rank's mean loss over its samples */
  float final[4][IN * HID];      /* rank 0's gathered parameters */
  trireme_memory_stats memory;   /* rank 0's */
  trireme_traffic_stats traffic;
};

#define TRY(call)                                                                    \
  do {                                                                               \
    trireme_status s_ = (call);                                                      \
    if (s_ != TRIREME_OK) {                                                          \
      fprintf(stderr, "%s failed (%d): %s\n", #call, (int)s_, trireme_last_error()); \
      return s_;                                                                     \
    }                                                                                \
  } while (0)

static trireme_status Train(trireme_comm* comm, void* user) {
  struct Run* run = (struct Run*)user;
  const int rank = trireme_comm_rank(comm), per = BATCH / trireme_comm_size(comm);
  const int64_t shape[4][2] = {{IN, HID}, {HID, 0}, {HID, OUT}, {OUT, 0}};
  trireme_units* units = NULL;
  trireme_engine* e = NULL;
  trireme_engine_options o;
  trireme_step_stats st;
  trireme_view v[4];
  int unit[2], p, step, n, i, j;
  TRY(trireme_units_create(&units));
  TRY(trireme_units_add_unit(units, "layer1", &unit[0]));
  TRY(trireme_units_add_unit(units, "layer2", &unit[1]));
  for (p = 0; p < 4; ++p) {
    TRY(trireme_units_add_param(units, unit[p / 2], kName[p], p % 2 == 0 ? 2 : 1, shape[p],
                                p % 2 == 0 ? 0 : TRIREME_PARAM_NO_DECAY));
  }
  trireme_engine_options_init(&o);
  o.stage = 3;
  o.lr = 0.02f;
  o.weight_decay = 0.01f;
  TRY(trireme_engine_create(comm, units, &o, &e));
  trireme_units_destroy(units);
  TRY(trireme_engine_initialize(e, Init, NULL));
  for (p = 0; p < 4; ++p) trireme_view_init(&v[p]);
  trireme_step_stats_init(&st);
  for (step = 0; step < STEPS; ++step) {
    float h[BATCH][HID], dy[BATCH][OUT], dh[BATCH][HID];
    double loss = 0;
    /* Forward, a layer at a time: its full weights exist only in between. */
    TRY(trireme_engine_pre_forward(e, unit[0]));
    TRY(trireme_engine_param(e, unit[0], 0, &v[0]));
    TRY(trireme_engine_param(e, unit[0], 1, &v[1]));
    for (n = 0; n < per; ++n) {
      for (j = 0; j < HID; ++j) {
        float a = ((float*)v[1].data)[j];
        for (i = 0; i < IN; ++i) a += X(rank * per + n, i) * ((float*)v[0].data)[i * HID + j];
        h[n][j] = tanhf(a);
      }
    }
    TRY(trireme_engine_post_forward(e, unit[0]));
    TRY(trireme_engine_pre_forward(e, unit[1]));
    TRY(trireme_engine_param(e, unit[1], 0, &v[2]));
    TRY(trireme_engine_param(e, unit[1], 1, &v[3]));
    for (n = 0; n < per; ++n) {
      for (j = 0; j < OUT; ++j) {
        float a = ((float*)v[3].data)[j];
        for (i = 0; i < HID; ++i) a += h[n][i] * ((float*)v[2].data)[i * OUT + j];
        dy[n][j] = (a - Y(rank * per + n, j)) / (float)per; /* d(mean loss)/dy */
        loss += 0.5 * (double)(a - Y(rank * per + n, j)) * (a - Y(rank * per + n, j)) / per;
      }
    }
    TRY(trireme_engine_post_forward(e, unit[1]));
    run->loss[rank][step] = loss;
    /* Backward, in reverse: ADD this rank's gradient into the views. */
    TRY(trireme_engine_pre_backward(e, unit[1]));
    TRY(trireme_engine_param(e, unit[1], 0, &v[2]));
    TRY(trireme_engine_grad(e, unit[1], 0, &v[0]));
    TRY(trireme_engine_grad(e, unit[1], 1, &v[1]));
    for (n = 0; n < per; ++n) {
      for (i = 0; i < HID; ++i) {
        float d = 0;
        for (j = 0; j < OUT; ++j) {
          ((float*)v[0].data)[i * OUT + j] += h[n][i] * dy[n][j];
          d += dy[n][j] * ((float*)v[2].data)[i * OUT + j];
        }
        dh[n][i] = d * (1 - h[n][i] * h[n][i]);
      }
      for (j = 0; j < OUT; ++j) ((float*)v[1].data)[j] += dy[n][j];
    }
    TRY(trireme_engine_post_backward(e, unit[1]));
    TRY(trireme_engine_pre_backward(e, unit[0]));
    TRY(trireme_engine_grad(e, unit[0], 0, &v[0]));
    TRY(trireme_engine_grad(e, unit[0], 1, &v[1]));
    for (n = 0; n < per; ++n) {
      for (j = 0; j < HID; ++j) {
        for (i = 0; i < IN; ++i)
          ((float*)v[0].data)[i * HID + j] += X(rank * per + n, i) * dh[n][j];
        ((float*)v[1].data)[j] += dh[n][j];
      }
    }
    TRY(trireme_engine_post_backward(e, unit[0]));
    TRY(trireme_engine_step(e, &st));
    if (rank == 0 && (step % 5 == 0 || step == STEPS - 1)) {
      printf("  ranks %d  step %2d  rank-0 loss %.6f  grad norm %.5f\n", run->ranks, step + 1, loss,
             st.grad_norm);
    }
  }
  for (p = 0; p < 4; ++p) {
    float full[IN * HID]; /* every rank gathers (collective); rank 0 keeps it */
    TRY(trireme_engine_gather_param(e, kName[p], full, kNumel[p]));
    if (rank == 0) memcpy(run->final[p], full, (size_t)kNumel[p] * sizeof(float));
  }
  if (rank == 0) {
    trireme_memory_stats_init(&run->memory);
    trireme_traffic_stats_init(&run->traffic);
    TRY(trireme_engine_memory(e, &run->memory));
    TRY(trireme_engine_traffic(e, &run->traffic));
  }
  return trireme_engine_destroy(e);
}

static double GlobalLoss(const struct Run* r, int step) {
  double sum = 0;
  int k;
  for (k = 0; k < r->ranks; ++k) sum += r->loss[k][step];
  return sum / r->ranks;
}

int main(void) {
  static struct Run one, four;
  double worst = 0;
  int failures = 0, p, c;
  int64_t i;
  if (trireme_version() != TRIREME_ABI_VERSION) {
    fprintf(stderr, "libtrireme's ABI is %d, this program's header is %d\n", trireme_version(),
            TRIREME_ABI_VERSION);
    return 1;
  }
  printf("trireme %s: a %dx%dx%d MLP, ZeRO-3, %d steps\n", trireme_version_string(), IN, HID, OUT,
         STEPS);
  one.ranks = 1;
  four.ranks = 4;
  if (trireme_run_threads(1, Train, &one) != TRIREME_OK ||
      trireme_run_threads(4, Train, &four) != TRIREME_OK) {
    fprintf(stderr, "training failed: %s\n", trireme_last_error());
    return 1;
  }
  for (p = 0; p < 4; ++p) {
    for (i = 0; i < kNumel[p]; ++i) {
      const double d = fabs((double)one.final[p][i] - four.final[p][i]);
      if (d > worst) worst = d;
      if (d > 1e-5 * (1 + fabs(one.final[p][i]))) {
        printf("FAIL %s[%ld]: 1 rank %.8g, 4 ranks %.8g\n", kName[p], (long)i, one.final[p][i],
               four.final[p][i]);
        ++failures;
      }
    }
  }
  printf("loss (global mean): step 1 %.6f -> step %d %.6f (1 rank %.6f)\n", GlobalLoss(&four, 0),
         STEPS, GlobalLoss(&four, STEPS - 1), GlobalLoss(&one, STEPS - 1));
  if (!(GlobalLoss(&four, STEPS - 1) < 0.5 * GlobalLoss(&four, 0))) {
    printf("FAIL: the loss did not halve\n");
    ++failures;
  }
  printf("4 ranks vs 1 rank, final parameters: max |diff| %.3g\n", worst);
  printf("rank 0's memory at peak (1 rank -> 4 ranks):");
  for (c = 0; c < TRIREME_MEM_CATEGORIES; ++c) {
    if (one.memory.peak[c] > 0) {
      printf(" %s %ld -> %ld", trireme_memory_category_name(c), (long)one.memory.peak[c],
             (long)four.memory.peak[c]);
    }
  }
  printf(" bytes\nrank 0 sent %ld bytes in %ld calls\n", (long)four.traffic.bytes_sent,
         (long)four.traffic.calls);
  /* ZeRO-3: the fp32 master and the Adam moments are sharded 4 ways. */
  if (!(four.memory.peak[3] * 3 < one.memory.peak[3] && four.traffic.bytes_sent > 0)) {
    printf("FAIL: the optimizer state is not sharded, or nothing was sent\n");
    ++failures;
  }
  printf(failures == 0 ? "PASS\n" : "FAIL: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
