// A whole training job of the GPT from a TrainConfig, on this process: the
// world (ranks as threads, or this process of an mpirun job, with NCCL data
// communicators on GPUs), every check before the first step (the checkpoint
// root locked and writable, the checkpoint to resume complete and of this
// model, the memory every rank will hold available, the same settings on
// every rank), the training loop (train_loop.h) with progress printed, and
// the summary a person wants at the end. //:train is a command line around
// RunTrainJob.
#ifndef TRIREME_MODELS_TRAIN_JOB_H_
#define TRIREME_MODELS_TRAIN_JOB_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "models/train_config.h"

namespace trireme {

struct TrainJobHooks {
  // Polled on every rank after every step (e.g. a signal handler's flag).
  std::function<bool()> stop_requested;
  // What asked to stop, for the message ("SIGTERM").
  std::function<std::string()> stop_reason;
};

enum class TrainJobEnd { kFinished, kStopped };

struct TrainJobFailure {
  // Under mpirun: the failure was agreed by every process before the first
  // step, and the leader (world rank 0) reports it; the others may stay
  // quiet, so the job prints it once.
  bool leader_reports = false;
};

// Runs the job. `use_mpi`: this process is one rank of an mpirun job
// (MpiRuntime initialized); otherwise every rank is a thread here.
// kStopped: a stop was requested and every rank stopped after the same step
// (a checkpoint of it committed, with a checkpoint_dir).
absl::StatusOr<TrainJobEnd> RunTrainJob(const TrainConfig& config, bool use_mpi,
                                        const TrainJobHooks& hooks,
                                        TrainJobFailure* failure = nullptr);

}  // namespace trireme

#endif  // TRIREME_MODELS_TRAIN_JOB_H_
