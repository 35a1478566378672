// Everything a training run of the GPT is told, in one struct: the model's
// shape, the grid, the optimizer, the data, evaluation, checkpoints, the
// device and the process setup. //:train builds it from its command line and
// a JSON file; an embedder sets the fields (or the same keys) directly.
//
// Every option has a name, a type, a default and a help line (Options());
// Set/Get read and write them as text, as a command line or a JSON file gives
// them. Validate() checks every number and names it; ToOptions() turns the
// configuration into the trainer's options.
#ifndef TRIREME_MODELS_TRAIN_CONFIG_H_
#define TRIREME_MODELS_TRAIN_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/gpt_trainer.h"
#include "runtime/core/json.h"

namespace trireme {

struct TrainConfig {
  // The process (read by //:train; compared across ranks like the rest).
  std::string config;  // a JSON file whose keys are these names
  // Comma-separated presets applied in order: an architecture (gpt2, llama),
  // a shape (tiny, default, small) or a named model (GptNamedShapes()).
  std::string preset;
  std::string backend = "auto";
  std::string device = "cpu";
  std::string save_on_signal = "TERM,INT,USR1";
  // The model.
  int layers = 4, hidden = 64, heads = 4, seq = 32, vocab = 256;
  int kv_heads = 0, ffn = 0, sliding_window = 0;
  std::string norm = "layernorm", position = "learned", mlp = "gelu";
  double rope_base = 10000;
  bool tied_head = true, bias = true;
  // The batch and the grid.
  int micro_batch = 4, grad_accum = 2, global_batch = 0;
  int dp = 2, tp = 2, pp = 2, virtual_stages = 1, zero = 3;
  bool sequence_parallel = false, recompute = false;
  std::string schedule = "1f1b", precision = "f32";
  // The optimizer.
  std::string optimizer = "adamw", lr_schedule = "cosine", on_nonfinite = "skip";
  double lr = 3e-3, weight_decay = 0.01, clip = 1.0;
  int warmup = 10;
  uint64_t seed = 1;
  int steps = 150;
  // Data, evaluation, progress.
  std::string data;
  int eval_every = 50, eval_batches = 2, log_every = 10;
  // Checkpoints.
  std::string checkpoint_dir, resume;
  int checkpoint_every = 0, keep_checkpoints = 3;
  // Memory.
  std::string memory_budget;
  bool force = false;

  struct Option {
    std::string name, type, help;
  };
  // Every option, in the order of --help.
  static const std::vector<Option>& Options();
  // `name` set from `text` (a flag's or a JSON value's text). InvalidArgument
  // naming the option and the text: an unknown name, or text that is not of
  // its type.
  absl::Status Set(absl::string_view name, absl::string_view text);
  // The option's value as text (doubles in the shortest form that reads back
  // exactly); "" for an unknown name.
  std::string Get(absl::string_view name) const;
  // Applies the presets of the comma-separated `name` in order to the
  // options for which `keep(name)` is false.
  absl::Status ApplyPreset(const std::string& name,
                           const std::function<bool(const std::string&)>& keep);

  // Every number and choice checked, the error naming the option and the
  // numbers ("--global_batch=10 but micro_batch (4) x grad_accum (2) x dp (2)
  // = 16"). Does not look at the machine (devices, files).
  absl::Status Validate() const;
  // The trainer's options (data sources not set; device as configured, not
  // yet per rank). Validates first; a cuda device must be usable here.
  absl::StatusOr<GptTrainOptions> ToOptions() const;

  int world_size() const { return dp * tp * pp; }
  int64_t global_batch_size() const { return int64_t{micro_batch} * grad_accum * dp; }
  // The options a checkpoint records of its run ("flags" in its manifest)
  // and the ones a resume must match (the model; grid, stage, schedule and
  // batch may change).
  Json RecordJson() const;
  static const std::vector<std::string>& ModelOptions();
};

// Builds a configuration from command-line arguments (--name=value; a bool
// also as --name or --noname): the defaults, then --preset's shape, then the
// keys of the JSON file --config names, then the command line (each later
// source wins). Errors name the argument or the file and key. `given` (may be
// null) receives the names set on the command line.
absl::StatusOr<TrainConfig> TrainConfigFromArgs(const std::vector<std::string>& args,
                                                std::vector<std::string>* given = nullptr);

// --help: every option with its type, default and help line.
std::string TrainConfigUsage();

}  // namespace trireme

#endif  // TRIREME_MODELS_TRAIN_CONFIG_H_
