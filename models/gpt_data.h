// The data the GPT trains on, as token sources for GptTrainOptions (data,
// eval_data): every source returns the tokens of one micro-batch,
// [micro_batch, seq + 1] (inputs [:, :seq], targets [:, 1:]), of a global
// micro-batch index, the same on every rank and run.
//  - GptBatch: a fixed, learnable pattern (the trainer's default);
//  - a synthetic Markov corpus whose entropy rate -- the best loss any model
//    can reach -- is known exactly;
//  - a text file as byte-level tokens, the last 10% held out.
#ifndef TRIREME_MODELS_GPT_DATA_H_
#define TRIREME_MODELS_GPT_DATA_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/gpt_config.h"

namespace trireme {

// Tokens of micro-batch `global_mb` of `step`: each sequence counts up by a
// stride from a random start (predictable after two tokens).
std::vector<int32_t> GptBatch(const GptConfig& c, int64_t step, int64_t global_mb);

// A first-order Markov chain over `vocab` tokens in which every token has 3
// possible successors with fixed random probabilities (from `seed`).
class MarkovCorpus {
 public:
  MarkovCorpus(int vocab, uint64_t seed);
  // Entropy rate in nats: over the stationary distribution, each state's
  // next-token entropy (successors that coincide merged).
  double EntropyRate() const;
  // P(next = `to` | current = `from`) (successors that coincide summed).
  double Probability(int from, int to) const;
  // Sequence `id`, `len` tokens.
  std::vector<int32_t> Sequence(uint64_t id, int len) const;

 private:
  int vocab_;
  std::vector<std::array<int, 3>> next_;
  std::vector<std::array<double, 3>> prob_;
};

using TokenSource = std::function<std::vector<int32_t>(int64_t step_or_batch, int64_t global_mb)>;

struct GptData {
  TokenSource train;        // (step, global micro-batch)
  TokenSource eval;         // (held-out batch, global micro-batch): never trained on
  std::string name;         // "markov" or the file's path (a checkpoint's record)
  std::string description;  // one line for a person
  double entropy_rate = 0;  // the best loss possible, when known (else 0)
};

// The Markov corpus over model.vocab tokens (seed model.seed); held-out
// sequences are ids the training stream never produces.
GptData MarkovData(const GptConfig& model);

// A text file's bytes as tokens (vocab >= 256): micro-batches of random
// windows of the first 90% (train) or the last 10% (eval). Errors name the
// file and the numbers: NotFound (cannot open), InvalidArgument (vocab below
// 256, or the held-out part shorter than seq + 2 bytes).
absl::StatusOr<GptData> TextFileData(const std::string& path, const GptConfig& model);

}  // namespace trireme

#endif  // TRIREME_MODELS_GPT_DATA_H_
