#include "models/gpt_data.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/core/hash.h"

namespace trireme {
namespace {

uint64_t CorpusHash(uint64_t a, uint64_t b, uint64_t c) {
  return MixShort(a * kSplitMixGamma ^ (b + 1) * kSplitMixM1 ^ (c + 3) * kSplitMixM2);
}

// The window starts of micro-batch `g` of `step` (or held-out batch): a
// fixed scatter over [0, span).
uint64_t WindowStart(int64_t step, int64_t g, int64_t b, int64_t span) {
  return ((step * 1000003 + g) * 131 + b) * 2654435761ull % span;
}

}  // namespace

std::vector<int32_t> GptBatch(const GptConfig& c, int64_t step, int64_t global_mb) {
  // Each sequence counts up by a stride from a random start: predictable
  // after two tokens, so the loss can fall well below log(vocab).
  std::vector<int32_t> tokens(c.micro_batch * (c.seq + 1));
  for (int64_t b = 0; b < c.micro_batch; ++b) {
    const uint64_t id = (static_cast<uint64_t>(step) * 1000003 + global_mb) * 131 + b;
    const int64_t start = static_cast<int64_t>(PairUniform(id, 1) * c.vocab);
    const int64_t stride = 1 + static_cast<int64_t>(PairUniform(id, 2) * 3);
    for (int64_t t = 0; t <= c.seq; ++t) {
      tokens[b * (c.seq + 1) + t] = static_cast<int32_t>((start + stride * t) % c.vocab);
    }
  }
  return tokens;
}

MarkovCorpus::MarkovCorpus(int vocab, uint64_t seed) : vocab_(vocab), next_(vocab), prob_(vocab) {
  for (int s = 0; s < vocab_; ++s) {
    double w[3], sum = 0;
    for (int k = 0; k < 3; ++k) {
      next_[s][k] = static_cast<int>(CorpusHash(seed, s, k) % vocab_);
      w[k] = 0.2 + (CorpusHash(seed, s, k + 7) % 1000) / 1000.0;
      sum += w[k];
    }
    for (int k = 0; k < 3; ++k) prob_[s][k] = w[k] / sum;
  }
}

double MarkovCorpus::EntropyRate() const {
  std::vector<double> pi(vocab_, 1.0 / vocab_), nxt(vocab_);
  for (int it = 0; it < 2000; ++it) {
    std::fill(nxt.begin(), nxt.end(), 0.0);
    for (int s = 0; s < vocab_; ++s) {
      for (int k = 0; k < 3; ++k) nxt[next_[s][k]] += pi[s] * prob_[s][k];
    }
    for (int s = 0; s < vocab_; ++s) pi[s] = 0.5 * pi[s] + 0.5 * nxt[s];  // lazy: aperiodic
  }
  double h = 0;
  for (int s = 0; s < vocab_; ++s) {
    std::vector<std::pair<int, double>> m;
    for (int k = 0; k < 3; ++k) {
      bool merged = false;
      for (auto& [t, p] : m) {
        if (t == next_[s][k]) {
          p += prob_[s][k];
          merged = true;
        }
      }
      if (!merged) m.push_back({next_[s][k], prob_[s][k]});
    }
    for (auto& [t, p] : m) h -= pi[s] * p * std::log(p);
  }
  return h;
}

double MarkovCorpus::Probability(int from, int to) const {
  double p = 0;
  for (int k = 0; k < 3; ++k) p += next_[from][k] == to ? prob_[from][k] : 0.0;
  return p;
}

std::vector<int32_t> MarkovCorpus::Sequence(uint64_t id, int len) const {
  std::vector<int32_t> out(len);
  int s = static_cast<int>(CorpusHash(id, 1, 2) % vocab_);
  for (int t = 0; t < len; ++t) {
    out[t] = s;
    const double u = (CorpusHash(id, t, 3) % 1000000) / 1e6;
    const int k = u < prob_[s][0] ? 0 : u < prob_[s][0] + prob_[s][1] ? 1 : 2;
    s = next_[s][k];
  }
  return out;
}

GptData MarkovData(const GptConfig& model) {
  auto corpus = std::make_shared<const MarkovCorpus>(static_cast<int>(model.vocab), model.seed);
  const int64_t len = model.seq + 1, mbs = model.micro_batch;
  auto sequences = [corpus, len, mbs](uint64_t base) {
    std::vector<int32_t> t;
    for (int64_t b = 0; b < mbs; ++b) {
      const std::vector<int32_t> s = corpus->Sequence(base * 131 + b, static_cast<int>(len));
      t.insert(t.end(), s.begin(), s.end());
    }
    return t;
  };
  GptData d;
  d.train = [sequences](int64_t step, int64_t g) { return sequences(step * 1000003 + g); };
  d.eval = [sequences](int64_t batch, int64_t g) {
    return sequences((uint64_t{1} << 60) + batch * 1000003 + g);
  };
  d.name = "markov";
  d.entropy_rate = corpus->EntropyRate();
  d.description = absl::StrFormat(
      "synthetic Markov corpus over %lld tokens; its entropy rate is %.3f nats/token -- the best "
      "loss possible (uniform guessing: %.3f)",
      static_cast<long long>(model.vocab), d.entropy_rate, std::log(double(model.vocab)));
  return d;
}

absl::StatusOr<GptData> TextFileData(const std::string& path, const GptConfig& model) {
  const int64_t len = model.seq + 1, mbs = model.micro_batch;
  if (model.vocab < 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--data gives byte-level tokens (0-255); --vocab=", model.vocab, " is below 256"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--data: cannot open '", path, "'"));
  auto text = std::make_shared<const std::string>(std::istreambuf_iterator<char>(in),
                                                  std::istreambuf_iterator<char>());
  const int64_t val_bytes = static_cast<int64_t>(text->size()) / 10;
  if (val_bytes < len + 1) {
    return absl::InvalidArgumentError(absl::StrCat("--data: '", path, "' has ", text->size(),
                                                   " bytes; its last 10% (validation) must hold "
                                                   "at least seq + 2 = ",
                                                   len + 1, " bytes, so at least ", 10 * (len + 1),
                                                   " are needed"));
  }
  const int64_t train_bytes = static_cast<int64_t>(text->size()) - val_bytes;
  // micro-batch `mbs` windows of `len` bytes from [begin, begin + span + len).
  auto windows = [text, len, mbs](int64_t step, int64_t g, int64_t begin, int64_t span) {
    std::vector<int32_t> t(mbs * len);
    for (int64_t b = 0; b < mbs; ++b) {
      const uint64_t start = begin + WindowStart(step, g, b, span);
      for (int64_t i = 0; i < len; ++i) {
        t[b * len + i] = static_cast<unsigned char>((*text)[start + i]);
      }
    }
    return t;
  };
  GptData d;
  d.train = [windows, train_bytes, len](int64_t step, int64_t g) {
    return windows(step, g, 0, train_bytes - len);
  };
  d.eval = [windows, train_bytes, val_bytes, len](int64_t batch, int64_t g) {
    return windows(batch, g, train_bytes, val_bytes - len);
  };
  d.name = path;
  d.description = absl::StrFormat(
      "%s, %zu bytes, byte-level tokens (last 10%% held out for validation)", path, text->size());
  return d;
}

}  // namespace trireme
