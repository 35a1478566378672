// Trains the GPT on the grid you choose, with ranks as threads, and shows what
// Trireme does: the loss falling toward the data's entropy, throughput and
// per-rank memory every step, and a summary at the end.
//
//   ./bazelw run //:train                                  the embedded default
//   ./bazelw run //:train -- --dp=1 --tp=2 --pp=2 --zero=1 --steps=100
//   ./bazelw run //:train -- --data=/path/to/text.txt      byte-level text
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "models/gpt_trainer.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"

ABSL_FLAG(int, layers, 4, "transformer blocks");
ABSL_FLAG(int, hidden, 64, "hidden size");
ABSL_FLAG(int, heads, 4, "attention heads");
ABSL_FLAG(int, seq, 32, "sequence length");
ABSL_FLAG(int, micro_batch, 4, "sequences per micro-batch");
ABSL_FLAG(int, micro_batches, 2, "micro-batches per DP rank per step");
ABSL_FLAG(int, dp, 2, "data-parallel degree");
ABSL_FLAG(int, tp, 2, "tensor-parallel degree");
ABSL_FLAG(int, pp, 2, "pipeline-parallel degree");
ABSL_FLAG(int, zero, 3, "ZeRO stage (0-3)");
ABSL_FLAG(bool, sequence_parallel, false, "sequence parallelism in the TP regions");
ABSL_FLAG(bool, recompute, false, "recompute every block in backward (activation checkpointing)");
ABSL_FLAG(std::string, schedule, "1f1b", "gpipe or 1f1b");
ABSL_FLAG(int, steps, 150, "optimizer steps");
ABSL_FLAG(double, lr, 3e-3, "peak learning rate (linear warmup, cosine decay)");
ABSL_FLAG(int, warmup, 10, "warmup steps");
ABSL_FLAG(double, clip, 1.0, "global grad-norm clipping (0: off)");
ABSL_FLAG(uint64_t, seed, 1, "parameter and data seed");
ABSL_FLAG(std::string, data, "", "a text file (byte-level tokens); empty: the synthetic corpus");
ABSL_FLAG(int, log_every, 10, "print a progress line every N steps");

namespace trireme {
namespace {

// The synthetic corpus: a first-order Markov chain over the byte vocabulary
// in which every token has 3 possible successors with fixed random
// probabilities. Its entropy rate is known exactly -- the best loss any
// model can reach.
class MarkovCorpus {
 public:
  MarkovCorpus(int vocab, uint64_t seed) : v_(vocab), next_(vocab), prob_(vocab) {
    for (int s = 0; s < v_; ++s) {
      double w[3], sum = 0;
      for (int k = 0; k < 3; ++k) {
        next_[s][k] = static_cast<int>(Hash(seed, s, k) % v_);
        w[k] = 0.2 + (Hash(seed, s, k + 7) % 1000) / 1000.0;
        sum += w[k];
      }
      for (int k = 0; k < 3; ++k) prob_[s][k] = w[k] / sum;
    }
  }
  // Entropy rate in nats: sum over the stationary distribution of each
  // state's next-token entropy (merging successors that coincide).
  double EntropyRate() const {
    std::vector<double> pi(v_, 1.0 / v_), nxt(v_);
    for (int it = 0; it < 2000; ++it) {
      std::fill(nxt.begin(), nxt.end(), 0.0);
      for (int s = 0; s < v_; ++s) {
        for (int k = 0; k < 3; ++k) nxt[next_[s][k]] += pi[s] * prob_[s][k];
      }
      for (int s = 0; s < v_; ++s) pi[s] = 0.5 * pi[s] + 0.5 * nxt[s];  // lazy: aperiodic
    }
    double h = 0;
    for (int s = 0; s < v_; ++s) {
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
  std::vector<int32_t> Sequence(uint64_t id, int len) const {
    std::vector<int32_t> out(len);
    int s = static_cast<int>(Hash(id, 1, 2) % v_);
    for (int t = 0; t < len; ++t) {
      out[t] = s;
      const double u = (Hash(id, t, 3) % 1000000) / 1e6;
      const int k = u < prob_[s][0] ? 0 : u < prob_[s][0] + prob_[s][1] ? 1 : 2;
      s = next_[s][k];
    }
    return out;
  }

 private:
  static uint64_t Hash(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 1) * 0xBF58476D1CE4E5B9ull ^
                 (c + 3) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return x;
  }
  int v_;
  std::vector<std::array<int, 3>> next_;
  std::vector<std::array<double, 3>> prob_;
};

struct RankSummary {
  MemoryTracker::Snapshot memory;
  CommStats dp, tp, pp;
  GridCoord coord;
};

absl::Status Main() {
  GptTrainOptions o;
  o.model.layers = absl::GetFlag(FLAGS_layers);
  o.model.hidden = absl::GetFlag(FLAGS_hidden);
  o.model.heads = absl::GetFlag(FLAGS_heads);
  o.model.vocab = 256;
  o.model.seq = absl::GetFlag(FLAGS_seq);
  o.model.micro_batch = absl::GetFlag(FLAGS_micro_batch);
  o.model.seed = absl::GetFlag(FLAGS_seed);
  o.model.sequence_parallel = absl::GetFlag(FLAGS_sequence_parallel);
  if (absl::GetFlag(FLAGS_recompute)) o.model.recompute.assign(o.model.layers, true);
  o.grid = {absl::GetFlag(FLAGS_dp), absl::GetFlag(FLAGS_tp), absl::GetFlag(FLAGS_pp)};
  o.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  const int steps = absl::GetFlag(FLAGS_steps);
  if (steps < 1) return absl::InvalidArgumentError(absl::StrCat("--steps=", steps, " must be >= 1"));
  o.engine.stage = absl::GetFlag(FLAGS_zero);
  o.engine.lr.kind = LrSchedule::Kind::kWarmupCosine;
  o.engine.lr.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.engine.lr.min_lr = o.engine.lr.lr / 10;
  o.engine.lr.warmup_steps = std::min(absl::GetFlag(FLAGS_warmup), steps);
  o.engine.lr.total_steps = steps;
  o.engine.clip_norm = static_cast<float>(absl::GetFlag(FLAGS_clip));
  o.engine.optimizer.weight_decay = 0.01f;
  ASSIGN_OR_RETURN(o.schedule, ParseSchedule(absl::GetFlag(FLAGS_schedule)));
  const int world = o.grid.dp * o.grid.tp * o.grid.pp;
  if (world < 1 || o.grid.dp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("dp (", o.grid.dp, "), tp (", o.grid.tp,
                                                   ") and pp (", o.grid.pp, ") must be >= 1"));
  }
  RETURN_IF_ERROR(o.model.Validate(o.grid.pp, o.grid.tp));
  const int64_t len = o.model.seq + 1, mbs = o.model.micro_batch;

  // Data: a text file's bytes, or the Markov corpus.
  std::string text;
  std::unique_ptr<MarkovCorpus> corpus;
  double best = 0;
  const std::string path = absl::GetFlag(FLAGS_data);
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--data: cannot open '", path, "'"));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (static_cast<int64_t>(text.size()) < len + 1) {
      return absl::InvalidArgumentError(absl::StrCat("--data: '", path, "' has ", text.size(),
                                                     " bytes, fewer than seq + 2 = ", len + 1));
    }
    printf("data: %s, %zu bytes, byte-level tokens\n", path.c_str(), text.size());
    o.data = [&text, len, mbs](int64_t step, int64_t g) {
      std::vector<int32_t> t(mbs * len);
      for (int64_t b = 0; b < mbs; ++b) {
        const uint64_t start = ((step * 1000003 + g) * 131 + b) * 2654435761ull %
                               (text.size() - len);
        for (int64_t i = 0; i < len; ++i) {
          t[b * len + i] = static_cast<unsigned char>(text[start + i]);
        }
      }
      return t;
    };
  } else {
    corpus = std::make_unique<MarkovCorpus>(256, o.model.seed);
    best = corpus->EntropyRate();
    printf("data: synthetic Markov corpus over 256 byte tokens; its entropy rate is %.3f "
           "nats/token -- the best loss possible (uniform guessing: %.3f)\n",
           best, std::log(256.0));
    MarkovCorpus* c = corpus.get();
    o.data = [c, len, mbs](int64_t step, int64_t g) {
      std::vector<int32_t> t;
      for (int64_t b = 0; b < mbs; ++b) {
        const std::vector<int32_t> s = c->Sequence((step * 1000003 + g) * 131 + b, len);
        t.insert(t.end(), s.begin(), s.end());
      }
      return t;
    };
  }
  printf("model: GPT, %d layers, hidden %lld, %d heads, seq %lld; grid dp=%d x tp=%d x pp=%d "
         "(%d ranks as threads), ZeRO-%d, %s, %d micro-batches of %lld per DP rank\n",
         o.model.layers, static_cast<long long>(o.model.hidden), o.model.heads,
         static_cast<long long>(o.model.seq), o.grid.dp, o.grid.tp, o.grid.pp, world,
         o.engine.stage, ScheduleName(o.schedule), o.micro_batches,
         static_cast<long long>(mbs));
  const int64_t tokens_per_step = int64_t{o.grid.dp} * o.micro_batches * mbs * o.model.seq;
  std::vector<RankSummary> summary(world);
  std::vector<double> losses;
  double first_loss = 0, train_seconds = 0;
  const int log_every = std::max(1, absl::GetFlag(FLAGS_log_every));
  RETURN_IF_ERROR(RunOnRanks(world, [&](Communicator& c) -> absl::Status {
    MemoryTracker mem(absl::StrCat("rank ", c.rank()));
    ASSIGN_OR_RETURN(auto t, GptTrainer::Create(c, o, &mem));
    const absl::Time start = absl::Now();
    for (int step = 1; step <= steps; ++step) {
      const absl::Time t0 = absl::Now();
      ASSIGN_OR_RETURN(GptStepResult r, t->Step(step));
      const double dt = absl::ToDoubleSeconds(absl::Now() - t0);
      // The peak over all ranks, for the progress line.
      float peak = static_cast<float>(mem.snapshot().total_peak);
      RETURN_IF_ERROR(c.AllReduce({&peak, 1, DType::kF32}, {&peak, 1, DType::kF32},
                                  ReduceOp::kMax));
      if (c.rank() == 0) {
        losses.push_back(r.loss);
        if (step == 1) first_loss = r.loss;
        if (step == 1 || step % log_every == 0 || step == steps) {
          printf("step %4d  loss %.4f  lr %.2e  grad norm %6.3f  %7.0f tokens/s  %6.1f ms  "
                 "peak memory/rank %s%s\n",
                 step, r.loss, r.stats.lr, r.stats.grad_norm, tokens_per_step / dt, dt * 1e3,
                 FormatBytes(static_cast<int64_t>(peak)).c_str(),
                 r.stats.skipped ? "  (skipped)" : "");
          fflush(stdout);
        }
      }
    }
    if (c.rank() == 0) train_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    RankSummary& s = summary[c.rank()];
    s.memory = mem.snapshot();
    s.dp = t->grid().dp_group().stats();
    s.tp = t->grid().tp_group().stats();
    s.pp = t->pipeline_stats();
    s.coord = t->grid().coord();
    return absl::OkStatus();
  }));

  double last = 0;
  const int tail = std::min<int>(10, static_cast<int>(losses.size()));
  for (int i = 0; i < tail; ++i) last += losses[losses.size() - 1 - i] / tail;
  printf("\nSummary: %d steps, %.1f s, %.0f tokens/s; loss %.3f -> %.3f (mean of the last %d)",
         steps, train_seconds, steps * tokens_per_step / train_seconds, first_loss, last, tail);
  if (best > 0) printf("; the data's entropy rate is %.3f", best);
  printf("\n\nPeak memory per rank and category (MemoryTracker)\n%-5s %-9s", "rank", "dp,tp,pp");
  for (int k = 0; k < kNumMemCategories; ++k) {
    printf(" %10s", MemCategoryName(static_cast<MemCategory>(k)));
  }
  printf(" %10s\n", "total");
  for (int r = 0; r < world; ++r) {
    const RankSummary& s = summary[r];
    printf("%-5d %-9s", r, absl::StrCat(s.coord.dp, ",", s.coord.tp, ",", s.coord.pp).c_str());
    for (int k = 0; k < kNumMemCategories; ++k) {
      printf(" %10s", FormatBytes(s.memory.peak[k]).c_str());
    }
    printf(" %10s\n", FormatBytes(s.memory.total_peak).c_str());
  }
  printf("\nCommunication per step (bytes sent; ring accounting)\n%-5s %12s %12s %12s\n",
         "rank", "DP", "TP", "PP");
  for (int r = 0; r < world; ++r) {
    printf("%-5d %12s %12s %12s\n", r, FormatBytes(summary[r].dp.total_sent() / steps).c_str(),
           FormatBytes(summary[r].tp.total_sent() / steps).c_str(),
           FormatBytes(summary[r].pp.total_sent() / steps).c_str());
  }
  printf("\nNot yet: checkpoints, validation, mpi launch (issue #7).\n");
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = trireme::Main(); !s.ok()) {
    fprintf(stderr, "train: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
