// Generation from a trained decoder with tensor parallelism: the model of a
// training checkpoint (saved on any grid) loaded onto a TP group of any size
// the model allows, a key/value cache sharded by key/value head (a ring of
// `sliding_window` positions with a window), and sampling (greedy,
// temperature, top-k, top-p) from a seed.
//
// The forward is the training model's own layers (layers.h) on the group's
// device and stream -- column-parallel q/k/v and MLP, row-parallel
// projections with an all-reduce, vocabulary-parallel embedding and head --
// with attention against the cache (kernels::CachedAttention) instead of the
// square causal attention. A batch of prompts advances one position at a time
// after a joint prefill of the positions every prompt has (at most the ring's
// capacity with a sliding window): a sequence still inside its prompt takes
// the prompt's next token instead of the sample, so every sequence is at the
// same position (one cache position per step).
#ifndef TRIREME_MODELS_GENERATE_H_
#define TRIREME_MODELS_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"
#include "models/gpt_params.h"
#include "runtime/comm/communicator.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "runtime/core/tensor.h"

namespace trireme {

struct SamplingOptions {
  int max_new_tokens = 64;
  float temperature = 1.0f;  // 0: greedy (the most likely token; the lowest id on a tie)
  int top_k = 0;             // > 0: only the k most likely tokens
  float top_p = 1.0f;        // < 1: only the most likely tokens whose probabilities reach p
  uint64_t seed = 1;
  // false: no cache -- every step recomputes the whole prefix (the reference
  // the cache is tested against; quadratic).
  bool use_cache = true;
};

struct Generation {
  // Per prompt: the prompt followed by max_new_tokens generated tokens.
  std::vector<std::vector<int32_t>> tokens;
  // Per prompt: log-probability (natural log, under the temperature-1
  // distribution of the model) of each generated token.
  std::vector<std::vector<double>> logprobs;
  int64_t prefill_tokens = 0, decode_tokens = 0;  // positions computed, all sequences
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t kv_cache_bytes = 0;  // this rank's cache
};

class GptGenerator {
 public:
  // Reads the model's configuration from the checkpoint's recorded flags
  // (a checkpoint of //:train; anything else: the config given) and this TP
  // rank's slice of every tensor ("master" state). `tp`: the TP group (any
  // size the model's heads allow), a communicator of host values (threads or
  // mpi). Collective over `tp` (each rank reads its slices; the outcome is
  // agreed).
  static absl::StatusOr<std::unique_ptr<GptGenerator>> Load(Communicator& tp,
                                                            const std::string& checkpoint,
                                                            Device device,
                                                            MemoryTracker* tracker = nullptr);
  // The model of `config` (sequence parallelism and recomputation are
  // dropped: they concern training) with the values `value(global_name)` (a
  // full global tensor of the checkpoint layout); for tests and benchmarks.
  using ValueFn = std::function<absl::StatusOr<std::vector<float>>(const std::string&)>;
  static absl::StatusOr<std::unique_ptr<GptGenerator>> Create(Communicator& tp,
                                                              const GptConfig& config,
                                                              Device device, const ValueFn& value,
                                                              MemoryTracker* tracker = nullptr);
  ~GptGenerator();

  // Continues each prompt by max_new_tokens tokens. Every TP rank returns the
  // same tokens. InvalidArgument for an empty prompt, a token outside the
  // vocabulary, or (learned positions) more positions than the model has.
  absl::StatusOr<Generation> Generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const SamplingOptions& o);

  // The next-token log-probabilities (temperature 1) at every position of
  // equal-length `sequences`: [sequence][position][vocab]. For tests.
  absl::StatusOr<std::vector<std::vector<std::vector<float>>>> LogProbs(
      const std::vector<std::vector<int32_t>>& sequences);

  const GptConfig& config() const { return config_; }
  // The cache bytes per rank for `batch` sequences of `length` positions.
  int64_t KvCacheBytes(int64_t batch, int64_t length) const;

  struct Weights;

 private:
  GptGenerator(Communicator& tp, GptConfig config, Device device, MemoryTracker* tracker);
  struct Cache;
  // Runs positions [first_pos, first_pos + queries) of every sequence (ids:
  // [batch * queries], row-major by sequence) through the model, writing
  // their keys and values into `cache`; *logits receives the full-vocabulary
  // logits of the last `keep` positions of each sequence ([batch][keep][V],
  // on the host, the same on every rank).
  absl::Status Forward(const std::vector<int32_t>& ids, int64_t batch, int64_t queries,
                       int64_t first_pos, int64_t keep, Cache* cache, std::vector<float>* logits);
  // Positions a cache for `length` positions holds: with `ring` and a
  // sliding window, a ring of the window's positions.
  int64_t CacheCapacity(int64_t length, bool ring) const;
  // `ring`: see CacheCapacity.
  absl::StatusOr<Cache> NewCache(int64_t batch, int64_t length, bool ring = true);
  absl::Status CheckTokens(const std::vector<int32_t>& ids) const;

  Communicator& tp_;  // host values (agreeing on errors)
  // The layers' collectives: tp_ itself, or (a GPU device) a communicator of
  // the same ranks whose data lives on the device.
  std::unique_ptr<Communicator> data_owned_;
  Communicator* data_ = nullptr;
  const GptConfig config_;
  const GptPlace place_;
  const Device device_;
  MemoryTracker* tracker_;
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<Weights> w_;
};

// A token drawn from `logits` ([vocab]) by the options' rule, with the
// uniform u in [0, 1) (greedy ignores it).
int32_t SampleToken(const std::vector<float>& logits, const SamplingOptions& o, double u);

}  // namespace trireme

#endif  // TRIREME_MODELS_GENERATE_H_
