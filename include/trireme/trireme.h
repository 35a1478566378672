/* Trireme's C API (C99): the ZeRO engine -- parameters, gradients and
 * optimizer state sharded over the ranks of a data-parallel group, gathered
 * on use and reduce-scattered in backward -- for trainers in any language.
 *
 * Build against the installed library: `pkg-config --cflags --libs trireme`
 * (libtrireme.so), or `pkg-config --cflags --libs trireme-static`
 * (libtrireme.a and the libraries it needs).
 *
 * Rules:
 *   - Every call returns a trireme_status (TRIREME_OK = 0); bad use never
 *     aborts the host process. A C++ exception that reaches the API (out of
 *     memory, a thread that cannot start) comes back as
 *     TRIREME_RESOURCE_EXHAUSTED or TRIREME_INTERNAL, and one on a rank
 *     thread of trireme_run_threads or a stream worker as that rank's or
 *     that collective's error. (Recovery from out-of-memory deep inside the
 *     runtime is not yet guaranteed: see the README's Embedding section.) The message of the
 * calling thread's last failed call is trireme_last_error(), and of its last failed call on an
 *     engine trireme_engine_last_error(e); each stays valid until that
 *     thread's next failure (on that engine).
 *   - The ABI is versioned: trireme_version() is TRIREME_ABI_VERSION of the
 *     library; option and result structs begin with `struct_size`, set by
 *     their _init function, so they can grow: a struct at least version 1's
 *     size is accepted, and results are written as far as struct_size
 *     reaches.
 *   - Handles are opaque; a null handle is TRIREME_INVALID_ARGUMENT, except
 *     that the _destroy and _close functions take NULL as nothing to do.
 *   - Lifetimes: destroy engines, then grids, then worlds. Destroying a
 *     communicator or a grid that an engine or grid still uses is refused
 *     (TRIREME_FAILED_PRECONDITION).
 *   - Collective calls (marked) must be made by every rank of the group in
 *     the same order.
 */
#ifndef TRIREME_TRIREME_H_
#define TRIREME_TRIREME_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TRIREME_ABI_VERSION 1
#define TRIREME_VERSION_STRING "0.18.0"

typedef enum trireme_status {
  TRIREME_OK = 0,
  TRIREME_INVALID_ARGUMENT = 1,    /* a null handle, a wrong size, a bad name or shape */
  TRIREME_FAILED_PRECONDITION = 2, /* hooks out of order, a step before registration */
  TRIREME_NOT_FOUND = 3,           /* a checkpoint, a parameter name */
  TRIREME_DATA_LOSS = 4,           /* a corrupt or truncated checkpoint */
  TRIREME_DEADLINE_EXCEEDED = 5,   /* a peer that never arrived */
  TRIREME_RESOURCE_EXHAUSTED = 6,  /* out of memory or disk space, no thread to start */
  TRIREME_UNAVAILABLE = 7,         /* a backend or device not present */
  TRIREME_INTERNAL = 8,
  TRIREME_ALREADY_EXISTS = 9, /* a checkpoint step already committed (never overwritten) */
  TRIREME_ABORTED = 10        /* a peer rank failed, so this collective could not finish */
} trireme_status;

typedef enum trireme_dtype { TRIREME_F32 = 0, TRIREME_BF16 = 1, TRIREME_F16 = 2 } trireme_dtype;

typedef enum trireme_device_kind {
  TRIREME_DEVICE_CPU = 0,
  TRIREME_DEVICE_CPU_ASYNC = 1,
  TRIREME_DEVICE_CUDA = 2
} trireme_device_kind;

/* The library's TRIREME_ABI_VERSION and TRIREME_VERSION_STRING (a header
 * and a library that differ were built apart). */
int trireme_version(void);
const char* trireme_version_string(void);
/* The calling thread's last error message ("" if none). Valid until the
 * thread's next failing call. */
const char* trireme_last_error(void);

/* ------------------------------------------------------------- worlds */

/* A rank's communicator over its group. */
typedef struct trireme_comm trireme_comm;

/* Runs `fn(comm, user)` on `ranks` threads (1..1024), each with its rank's
 * communicator (ranks as threads in this process); returns when all have,
 * with the first failure (a failing rank releases the others from their
 * collectives). `comm` lives while `fn` runs: grids and engines over it
 * must be destroyed before `fn` returns; any left are leaked (never destroy
 * them later) and the call fails (TRIREME_FAILED_PRECONDITION, or `fn`'s
 * own error with a note). Waits are bounded by TRIREME_COMM_TIMEOUT_S, as
 * below. */
typedef trireme_status (*trireme_rank_fn)(trireme_comm* comm, void* user);
trireme_status trireme_run_threads(int ranks, trireme_rank_fn fn, void* user);
/* This process's communicator under mpirun (MPI_Init with
 * MPI_THREAD_MULTIPLE if needed): collective over the job's ranks. Free it
 * with trireme_comm_destroy; the last one destroyed finalizes MPI when this
 * library initialized it (MPI cannot start again in that process:
 * TRIREME_FAILED_PRECONDITION). Every wait is bounded: TRIREME_COMM_TIMEOUT_S
 * (default 600) seconds, then TRIREME_DEADLINE_EXCEEDED -- never a hang. */
trireme_status trireme_mpi_world(int* argc, char*** argv, trireme_comm** out);
/* Frees a communicator from trireme_mpi_world. Those from
 * trireme_run_threads and trireme_grid_group belong to their owner:
 * TRIREME_INVALID_ARGUMENT. */
trireme_status trireme_comm_destroy(trireme_comm* comm);
int trireme_comm_rank(const trireme_comm* comm); /* -1 for a null handle */
int trireme_comm_size(const trireme_comm* comm); /* -1 for a null handle */

/* Host values reduced over `comm` in place (collective): the loss averaged
 * over the ranks, a flag any rank raised. */
typedef enum trireme_reduce_op {
  TRIREME_REDUCE_SUM = 0,
  TRIREME_REDUCE_AVG = 1,
  TRIREME_REDUCE_MAX = 2
} trireme_reduce_op;
trireme_status trireme_comm_all_reduce(trireme_comm* comm, float* values, int64_t count,
                                       trireme_reduce_op op);

/* A DP x TP x PP grid over a world (rank = (pp * dp + dp_coord) * tp +
 * tp_coord: TP innermost). Collective over `world`; dp <= 0 is inferred as
 * size / (tp * pp). The engine shards over the grid's DP group; TP and PP
 * groups are for the host's own model parallelism. */
typedef struct trireme_grid trireme_grid;
typedef enum trireme_axis {
  TRIREME_AXIS_DP = 0,
  TRIREME_AXIS_TP = 1,
  TRIREME_AXIS_PP = 2
} trireme_axis;
trireme_status trireme_grid_create(trireme_comm* world, int dp, int tp, int pp, trireme_grid** out);
trireme_status trireme_grid_destroy(trireme_grid* grid);
/* This rank's group along `axis` (owned by the grid; valid while it lives). */
trireme_status trireme_grid_group(trireme_grid* grid, trireme_axis axis, trireme_comm** out);

/* --------------------------------------------------------- registration */

/* Units: groups of parameters gathered and reduced together. */
typedef struct trireme_units trireme_units;
trireme_status trireme_units_create(trireme_units** out);
trireme_status trireme_units_destroy(trireme_units* units);
/* A new unit; *index is its number (0, 1, ... in call order). */
trireme_status trireme_units_add_unit(trireme_units* units, const char* name, int* index);
/* A parameter of unit `unit` (names unique over all units), `ndim` dims
 * (1..8, each >= 1), and flags:
 *   NO_DECAY   no weight decay (biases, norms);
 *   FROZEN     no gradient, no optimizer state;
 *   TP_SPLIT   each TP rank holds a different part (with an engine on a
 *              grid's DP group; otherwise the parameter is taken to be the
 *              same on every TP rank and counted once in the grad norm);
 *   NORM_DUPLICATE  a copy another pipeline stage also holds and counts
 *              (a tied head): left out of the grad norm here. */
enum {
  TRIREME_PARAM_NO_DECAY = 1,
  TRIREME_PARAM_FROZEN = 2,
  TRIREME_PARAM_TP_SPLIT = 4,
  TRIREME_PARAM_NORM_DUPLICATE = 8
};
trireme_status trireme_units_add_param(trireme_units* units, int unit, const char* name, int ndim,
                                       const int64_t* shape, int flags);

typedef enum trireme_optimizer { TRIREME_ADAMW = 0, TRIREME_SGD = 1 } trireme_optimizer;
typedef enum trireme_lr_schedule {
  TRIREME_LR_CONSTANT = 0,
  TRIREME_LR_WARMUP_COSINE = 1 /* linear warmup to lr, cosine to min_lr at total_steps */
} trireme_lr_schedule;

typedef struct trireme_engine_options {
  size_t struct_size;                      /* sizeof(trireme_engine_options), set by _init */
  int stage;                               /* ZeRO 0..3 (default 3) */
  trireme_dtype compute_dtype, grad_dtype; /* default f32, f32 */
  trireme_device_kind device;              /* default cpu */
  int device_index;
  int grad_accum;                                       /* micro-batches per step (default 1) */
  float lr, weight_decay, beta1, beta2, eps, clip_norm; /* AdamW; clip <= 0: off */
  trireme_optimizer optimizer;                          /* default AdamW */
  float momentum;                                       /* SGD (default 0.9) */
  trireme_lr_schedule lr_schedule;                      /* default constant */
  float min_lr;
  int64_t warmup_steps, total_steps;
  int grad_reduce_dtype;  /* -1 (default): grad_dtype; else a trireme_dtype to reduce in */
  int prefetch_depth;     /* stage 3: gathers issued ahead (default 1) */
  int loss_scaling;       /* nonzero: dynamic loss scaling (f16 compute) */
  int abort_on_nonfinite; /* nonzero: a non-finite gradient fails the step (DATA_LOSS)
                             instead of skipping it */
  int kernel_threads;     /* threads for this rank's optimizer kernels (default 1) */
} trireme_engine_options;
void trireme_engine_options_init(trireme_engine_options* options);

/* --------------------------------------------------------------- engine */

typedef struct trireme_engine trireme_engine;
/* Collective over `dp` (a world, or a grid's DP group: then the grad norm
 * is also reduced over the grid's TP and PP groups). The units are copied.
 * Every option is validated (TRIREME_INVALID_ARGUMENT naming it). A units
 * set with no unit, or
 * a unit with no parameter, is TRIREME_INVALID_ARGUMENT. The engine must be
 * initialized (trireme_engine_initialize or trireme_engine_load) before its
 * hooks and step: TRIREME_FAILED_PRECONDITION otherwise. */
trireme_status trireme_engine_create(trireme_comm* dp, const trireme_units* units,
                                     const trireme_engine_options* options, trireme_engine** out);
trireme_status trireme_engine_destroy(trireme_engine* engine);
const char* trireme_engine_last_error(const trireme_engine* engine);

/* Fills every parameter: `fn` writes `count` f32 values of parameter `name`
 * (its full value; every rank must give the same). */
typedef trireme_status (*trireme_init_fn)(const char* name, float* values, int64_t count,
                                          void* user);
trireme_status trireme_engine_initialize(trireme_engine* engine, trireme_init_fn fn, void* user);

/* The hooks, per unit and micro-batch (collective in stages 2-3):
 * pre_forward, (forward), post_forward, ..., pre_backward, (backward: add
 * into the gradient views), post_backward. Out of order:
 * TRIREME_FAILED_PRECONDITION naming the hook, the unit and its state. */
trireme_status trireme_engine_pre_forward(trireme_engine* engine, int unit);
trireme_status trireme_engine_post_forward(trireme_engine* engine, int unit);
trireme_status trireme_engine_pre_backward(trireme_engine* engine, int unit);
trireme_status trireme_engine_post_backward(trireme_engine* engine, int unit);

typedef struct trireme_view {
  size_t struct_size;
  void* data;    /* device memory of the engine's device */
  int64_t count; /* elements */
  trireme_dtype dtype;
  trireme_device_kind device;
  int device_index;
} trireme_view;
void trireme_view_init(trireme_view* view);
/* Parameter `param` of `unit` (full, compute dtype): between pre_forward and
 * post_forward, and between pre_backward and post_backward.
 * On TRIREME_DEVICE_CPU the data is ready when the hook returns. On
 * TRIREME_DEVICE_CPU_ASYNC (and CUDA) the engine's work runs on its own
 * streams: call trireme_engine_synchronize after the hook before the host
 * touches the data, and finish writing before the next hook. (The C API
 * has no stream handle yet for enqueueing CUDA kernels in order; CUDA
 * engines compile but are not yet run through it on a GPU.) */
trireme_status trireme_engine_param(trireme_engine* engine, int unit, int param, trireme_view* out);
/* Its gradient buffer (grad dtype, full): ADD the micro-batch's gradient of
 * the mean loss into it, between pre_backward and post_backward. */
trireme_status trireme_engine_grad(trireme_engine* engine, int unit, int param, trireme_view* out);

/* Blocks until the engine's streams have run everything enqueued; returns
 * their first error. */
trireme_status trireme_engine_synchronize(trireme_engine* engine);

typedef struct trireme_step_stats {
  size_t struct_size;
  int64_t step; /* steps taken, skipped ones included */
  float lr;
  double grad_norm; /* global, before clipping */
  int skipped;      /* a non-finite gradient anywhere */
} trireme_step_stats;
void trireme_step_stats_init(trireme_step_stats* stats);
/* Reduces what is left, clips, updates the shards. Collective. `out` may
 * be NULL. */
trireme_status trireme_engine_step(trireme_engine* engine, trireme_step_stats* out);

/* The full value of parameter `name` as f32 into `values` (`count`: its
 * element count exactly). Collective over the DP group. */
trireme_status trireme_engine_gather_param(trireme_engine* engine, const char* name, float* values,
                                           int64_t count);

/* ---------------------------------------------------------- checkpoints */

/* Checkpoints hold each global tensor once, independent of the grid and
 * the ZeRO stage that wrote them, so they load onto any other dp and stage.
 *
 * Where a rank's local parameter `name` (local `shape`) sits in its global
 * tensor of the same name: `global_shape` (ndim dims) and, per dim, the
 * offset of the local block; `owner` zero where another rank holding the
 * same block (a TP replica) saves it -- it is still loaded. Each DP rank
 * saves the slice of the block whose optimizer state it owns. A NULL layout
 * function: local = global, owned (no model parallelism). The block is the
 * whole local parameter: a local tensor that interleaves several global
 * ones (a fused QKV weight) or carries padding needs the C++ API's
 * TensorLayout. */
typedef struct trireme_layout {
  size_t struct_size;
  int ndim;
  int64_t global_shape[8];
  int64_t offset[8];
  int owner;
} trireme_layout;
/* Called with `out` set to the identity layout (owner = 1); adjust it. */
typedef trireme_status (*trireme_layout_fn)(const char* name, int ndim, const int64_t* shape,
                                            trireme_layout* out, void* user);
/* Collective over the world the engine's DP group came from: every rank
 * writes its shard to `root`/step-NNNNNNNN (written to a temporary
 * directory, checked, then renamed), then `root`/latest names it. A
 * failed save leaves the previous checkpoint and `latest` intact; a step
 * already committed under `root` is TRIREME_ALREADY_EXISTS. */
trireme_status trireme_engine_save(trireme_engine* engine, const char* root, int64_t step,
                                   trireme_layout_fn layout, void* user);
/* Collective: a checkpoint of any dp and stage (`path`: a step directory or
 * a root with `latest`). Everything is validated (sizes, CRC32C, shapes,
 * coverage) before the engine changes: TRIREME_NOT_FOUND,
 * TRIREME_DATA_LOSS or TRIREME_INVALID_ARGUMENT naming the file or tensor,
 * with the engine untouched. *step (optional) gets its step. */
trireme_status trireme_engine_load(trireme_engine* engine, const char* path,
                                   trireme_layout_fn layout, void* user, int64_t* step);

/* A checkpoint read offline (not collective): opened and fully validated
 * (`path`: a step directory, or a root with `latest`). */
typedef struct trireme_checkpoint trireme_checkpoint;
trireme_status trireme_checkpoint_open(const char* path, trireme_checkpoint** out);
trireme_status trireme_checkpoint_close(trireme_checkpoint* checkpoint);
trireme_status trireme_checkpoint_info(const trireme_checkpoint* checkpoint, int64_t* step,
                                       int* num_tensors);
/* Tensor `index` (0 .. num_tensors-1): its name (valid while the handle
 * lives), ndim and shape (up to 8 dims). */
trireme_status trireme_checkpoint_tensor(const trireme_checkpoint* checkpoint, int index,
                                         const char** name, int* ndim, int64_t* shape);
/* The full tensor `name`, state "master", "m" or "v", as f32 (`count`: its
 * element count exactly). */
trireme_status trireme_checkpoint_read(const trireme_checkpoint* checkpoint, const char* name,
                                       const char* state, float* values, int64_t count);

/* --------------------------------------------------------------- stats */

/* What this rank holds, measured by the engine's allocation tracker. */
#define TRIREME_MEM_CATEGORIES 7
/* "param", "grad", "master", "optim", "activation", "comm", "workspace";
 * NULL out of range. */
const char* trireme_memory_category_name(int category);
typedef struct trireme_memory_stats {
  size_t struct_size;
  int64_t current[TRIREME_MEM_CATEGORIES]; /* bytes now, per category */
  int64_t peak[TRIREME_MEM_CATEGORIES];    /* and at peak */
  int64_t total_current, total_peak;
} trireme_memory_stats;
void trireme_memory_stats_init(trireme_memory_stats* stats);
trireme_status trireme_engine_memory(const trireme_engine* engine, trireme_memory_stats* out);

/* What a communicator moved so far (ring-algorithm bytes, as nccl-tests
 * count them), its calls, and the host time spent blocked on it. */
typedef struct trireme_traffic_stats {
  size_t struct_size;
  int64_t bytes_sent, bytes_received, calls;
  double busy_seconds, blocked_seconds;
} trireme_traffic_stats;
void trireme_traffic_stats_init(trireme_traffic_stats* stats);
trireme_status trireme_comm_traffic(const trireme_comm* comm, trireme_traffic_stats* out);
/* The engine's DP group's traffic. */
trireme_status trireme_engine_traffic(const trireme_engine* engine, trireme_traffic_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* TRIREME_TRIREME_H_ */
