#include "tests/runtime/zero/mlp.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/core/hash.h"

namespace trireme::testing {
namespace {

// A deterministic value in [-1, 1) from integers (splitmix64).
float Hash(uint64_t a, uint64_t b, uint64_t c) {
  const uint64_t x = MixShort(a * kSplitMixGamma ^ (b + 0x632BE59BD9B4E019ull) * kSplitMixM1 ^
                              (c + 7) * kSplitMixM2);
  return static_cast<float>((x >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

// The basis the tests' thresholds were tuned with (the GPT's too; see
// models/gpt.cc).
// The reference's steps are 1-based by construction: a failure is a bug in
// the test itself.
void Must(const absl::Status& s) {
  if (!s.ok()) {
    fprintf(stderr, "reference MLP: %s\n", s.ToString().c_str());
    std::abort();
  }
}

uint64_t NameSeed(const std::string& s) { return Fnv1a64(s, 1469598103934665603ull); }

}  // namespace

std::vector<UnitSpec> MlpUnits() {
  return {
      {"layer1", {{"w1", {kIn, kH1}, true}, {"b1", {kH1}, false}}},
      {"layer2", {{"w2", {kH1, kH2}, true}, {"b2", {kH2}, false}}},
      {"head", {{"w3", {kH2, 1}, true}, {"b3", {1}, false}, {"gain", {kZ}, true}}},
  };
}

absl::Status MlpInit(const ParamInfo& info, float* values) {
  const float scale = info.name == "gain" ? 0.05f : info.name[0] == 'b' ? 0.1f : 0.5f;
  for (int64_t i = 0; i < info.numel; ++i) values[i] = scale * Hash(NameSeed(info.name), i, 1);
  return absl::OkStatus();
}

Batch MakeBatch(int64_t step, int64_t first, int count) {
  Batch b;
  b.size = count;
  b.x.resize(count * kIn);
  b.z.resize(count * kZ);
  b.t.resize(count);
  for (int s = 0; s < count; ++s) {
    const uint64_t id = static_cast<uint64_t>(step) * 1000003 + first + s;
    for (int k = 0; k < kIn; ++k) b.x[s * kIn + k] = Hash(id, k, 2);
    for (int k = 0; k < kZ; ++k) b.z[s * kZ + k] = 0.03f * Hash(id, k, 3);
    const float* x = &b.x[s * kIn];
    b.t[s] = 0.5f * std::tanh(x[0] - x[1] + 0.5f * x[2]) + 0.05f * Hash(id, 0, 4);
  }
  return b;
}

void Forward(int unit, const std::vector<const float*>& p, const Batch& b, Acts& a) {
  const int n = b.size;
  if (unit == 0) {
    a.h1.assign(n * kH1, 0.0f);
    for (int s = 0; s < n; ++s) {
      for (int j = 0; j < kH1; ++j) {
        float acc = p[1][j];
        for (int k = 0; k < kIn; ++k) acc += b.x[s * kIn + k] * p[0][k * kH1 + j];
        a.h1[s * kH1 + j] = std::tanh(acc);
      }
    }
  } else if (unit == 1) {
    a.h2.assign(n * kH2, 0.0f);
    for (int s = 0; s < n; ++s) {
      for (int j = 0; j < kH2; ++j) {
        float acc = p[1][j];
        for (int k = 0; k < kH1; ++k) acc += a.h1[s * kH1 + k] * p[0][k * kH2 + j];
        a.h2[s * kH2 + j] = std::tanh(acc);
      }
    }
  } else {
    a.y.assign(n, 0.0f);
    a.loss = 0;
    for (int s = 0; s < n; ++s) {
      float acc = p[1][0];
      for (int k = 0; k < kH2; ++k) acc += a.h2[s * kH2 + k] * p[0][k];
      for (int k = 0; k < kZ; ++k) acc += b.z[s * kZ + k] * p[2][k];
      a.y[s] = acc;
      const double e = acc - b.t[s];
      a.loss += 0.5 * e * e / n;
    }
  }
}

void Backward(int unit, const std::vector<const float*>& p, const std::vector<float*>& g,
              const Batch& b, const Acts& a, std::vector<float>& d, float loss_scale) {
  const int n = b.size;
  if (unit == 2) {  // d: dL/dy -> dL/dh2
    std::vector<float> dh2(n * kH2);
    for (int s = 0; s < n; ++s) {
      const float dy = loss_scale * (a.y[s] - b.t[s]) / static_cast<float>(n);
      g[1][0] += dy;
      for (int k = 0; k < kH2; ++k) {
        g[0][k] += a.h2[s * kH2 + k] * dy;
        dh2[s * kH2 + k] = p[0][k] * dy;
      }
      for (int k = 0; k < kZ; ++k) g[2][k] += b.z[s * kZ + k] * dy;
    }
    d = std::move(dh2);
  } else if (unit == 1) {  // d: dL/dh2 -> dL/dh1
    std::vector<float> dh1(n * kH1, 0.0f);
    for (int s = 0; s < n; ++s) {
      for (int j = 0; j < kH2; ++j) {
        const float h = a.h2[s * kH2 + j];
        const float dpre = d[s * kH2 + j] * (1.0f - h * h);
        g[1][j] += dpre;
        for (int k = 0; k < kH1; ++k) {
          g[0][k * kH2 + j] += a.h1[s * kH1 + k] * dpre;
          dh1[s * kH1 + k] += p[0][k * kH2 + j] * dpre;
        }
      }
    }
    d = std::move(dh1);
  } else {  // d: dL/dh1
    for (int s = 0; s < n; ++s) {
      for (int j = 0; j < kH1; ++j) {
        const float h = a.h1[s * kH1 + j];
        const float dpre = d[s * kH1 + j] * (1.0f - h * h);
        g[1][j] += dpre;
        for (int k = 0; k < kIn; ++k) g[0][k * kH1 + j] += b.x[s * kIn + k] * dpre;
      }
    }
  }
}

Reference::Reference(EngineOptions o, int dp, std::vector<UnitSpec> units)
    : o_(o), dp_(dp), units_(std::move(units)) {
  for (const UnitSpec& u : units_) {
    std::vector<int64_t> offs;
    int64_t total = 0;
    for (const ParamSpec& p : u.params) {
      offs.push_back(total);
      int64_t numel = 1;
      for (int64_t d : p.shape) numel *= d;
      total += numel;
    }
    offs.push_back(total);
    const int64_t padded = (total + dp - 1) / dp * dp;
    std::vector<float> flat(padded, 0.0f);
    for (size_t i = 0; i < u.params.size(); ++i) {
      ParamInfo info{u.params[i].name,        u.params[i].shape, offs[i + 1] - offs[i], 0, 0, {},
                     u.params[i].weight_decay};
      MlpInit(info, flat.data() + offs[i]).IgnoreError();
    }
    params_.push_back(flat);
    grads_.emplace_back(padded, 0.0f);
    m_.emplace_back(padded, 0.0f);
    v_.emplace_back(padded, 0.0f);
    offsets_.push_back(offs);
  }
}

void Reference::Step(int64_t step, int micro_batch) {
  const int accum = o_.grad_accum;
  // Data-parallel semantics without sharding: virtual rank r accumulates the
  // gradients of its micro-batches (samples [(k * dp + r) * micro_batch, ...)),
  // then the ranks' gradients are averaged in rank order -- the order the
  // threads backend reduces in. Nothing here is partitioned or padded-aware.
  std::vector<std::vector<std::vector<float>>> per_rank(dp_);
  std::vector<float> losses(dp_, 0.0f);
  for (int r = 0; r < dp_; ++r) {
    for (auto& g : grads_) per_rank[r].emplace_back(g.size(), 0.0f);
    double local = 0;
    for (int k = 0; k < accum; ++k) {
      Batch b = MakeBatch(step, (static_cast<int64_t>(k) * dp_ + r) * micro_batch, micro_batch);
      Acts a;
      auto ptrs = [&](int u) {
        std::vector<const float*> p;
        for (size_t i = 0; i + 1 < offsets_[u].size(); ++i) {
          p.push_back(params_[u].data() + offsets_[u][i]);
        }
        return p;
      };
      auto gptrs = [&](int u) {
        std::vector<float*> g;
        for (size_t i = 0; i + 1 < offsets_[u].size(); ++i) {
          g.push_back(per_rank[r][u].data() + offsets_[u][i]);
        }
        return g;
      };
      for (int u = 0; u < 3; ++u) Forward(u, ptrs(u), b, a);
      local += a.loss / accum;
      std::vector<float> d;
      for (int u = 2; u >= 0; --u) Backward(u, ptrs(u), gptrs(u), b, a, d);
    }
    losses[r] = static_cast<float>(local);
  }
  float loss = losses[0];
  for (int r = 1; r < dp_; ++r) loss += losses[r];
  loss_ = loss / static_cast<float>(dp_);
  double sumsq = 0;
  for (size_t u = 0; u < grads_.size(); ++u) {
    for (size_t p = 0; p < units_[u].params.size(); ++p) {
      for (int64_t i = offsets_[u][p]; i < offsets_[u][p + 1]; ++i) {
        float acc = per_rank[0][u][i];
        for (int r = 1; r < dp_; ++r) acc += per_rank[r][u][i];
        grads_[u][i] = acc / static_cast<float>(dp_);
        const double g = grads_[u][i] / static_cast<double>(accum);
        if (units_[u].params[p].requires_grad) sumsq += g * g;
      }
    }
  }
  norm_ = std::sqrt(sumsq);
  const float clip = ClipCoefficient(norm_, o_.clip_norm);
  const float grad_scale = static_cast<float>(1.0 / accum * clip);
  ++opt_step_;
  const float lr = o_.lr.At(opt_step_);
  for (size_t u = 0; u < units_.size(); ++u) {
    for (size_t i = 0; i < units_[u].params.size(); ++i) {
      const int64_t off = offsets_[u][i], len = offsets_[u][i + 1] - off;
      const bool decay = units_[u].params[i].weight_decay;
      if (!units_[u].params[i].requires_grad) continue;
      if (o_.optimizer.kind == OptimizerKind::kAdamW) {
        Must(AdamWUpdate(o_.optimizer, opt_step_, lr, decay, grad_scale, params_[u].data() + off,
                         grads_[u].data() + off, m_[u].data() + off, v_[u].data() + off, len));
      } else {
        Must(SgdUpdate(o_.optimizer, opt_step_, lr, decay, grad_scale, params_[u].data() + off,
                       grads_[u].data() + off, m_[u].data() + off, len));
      }
    }
  }
  // Expose the gradient as GradShard does: averaged over micro-batches too.
  for (auto& g : grads_) {
    for (float& x : g) x /= static_cast<float>(accum);
  }
}

std::vector<float> Reference::param(const std::string& name) const {
  for (size_t u = 0; u < units_.size(); ++u) {
    for (size_t i = 0; i < units_[u].params.size(); ++i) {
      if (units_[u].params[i].name == name) {
        return std::vector<float>(params_[u].begin() + offsets_[u][i],
                                  params_[u].begin() + offsets_[u][i + 1]);
      }
    }
  }
  return {};
}

}  // namespace trireme::testing

namespace trireme::testing {

namespace {

// The views of a unit's parameters (or gradients) while it is in use.
absl::StatusOr<std::vector<MutView>> Views(ZeroEngine& e, int u, bool grads) {
  std::vector<MutView> out;
  for (size_t i = 0; i < e.unit_params(u).size(); ++i) {
    if (grads && !e.unit_params(u)[i].requires_grad) {
      out.push_back({});  // frozen: no gradient
      continue;
    }
    auto v = grads ? e.Grad(u, static_cast<int>(i)) : e.Param(u, static_cast<int>(i));
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return out;
}

// f32 copies of `views` (the model computes in f32: 16-bit compute copies
// are widened). Runs inside a task on the compute stream.
std::vector<std::vector<float>> Widen(const std::vector<MutView>& views) {
  std::vector<std::vector<float>> out(views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    out[i].resize(views[i].count);
    for (int64_t j = 0; j < views[i].count; ++j) {
      out[i][j] = LoadAsF32(views[i].data, views[i].dtype, j);
    }
  }
  return out;
}

std::vector<const float*> Pointers(const std::vector<std::vector<float>>& v) {
  std::vector<const float*> p;
  for (const auto& x : v) p.push_back(x.data());
  return p;
}

struct MicroBatch {
  Batch b;
  Acts a;
  std::vector<float> d;  // the running upstream gradient
};

}  // namespace

absl::StatusOr<double> RunMicroBatches(ZeroEngine& e, int dp_rank, int dp, int64_t step,
                                       int micro_batch) {
  // The arithmetic runs as tasks on the engine's compute stream, in the
  // windows the hooks open: inline on cpu, on the stream's worker on
  // cpu_async. Gradients are computed in f32 and added into the engine's
  // buffers in the grad dtype (as a mixed-precision trainer does).
  HostStream* compute = e.compute_stream().host();
  if (compute == nullptr) return absl::UnimplementedError("the MLP runs on host streams only");
  const int accum = e.options().grad_accum;
  const float loss_scale = e.loss_scale();
  auto loss = std::make_shared<double>(0.0);
  for (int k = 0; k < accum; ++k) {
    auto mb = std::make_shared<MicroBatch>();
    mb->b = MakeBatch(step, (static_cast<int64_t>(k) * dp + dp_rank) * micro_batch, micro_batch);
    for (int u = 0; u < e.num_units(); ++u) {
      if (auto s = e.PreForward(u); !s.ok()) return s;
      auto p = Views(e, u, /*grads=*/false);
      if (!p.ok()) return p.status();
      compute->Enqueue([u, mb, p = *p] {
        const auto widened = Widen(p);
        Forward(u, Pointers(widened), mb->b, mb->a);
        return absl::OkStatus();
      });
      if (auto s = e.PostForward(u); !s.ok()) return s;
    }
    compute->Enqueue([mb, loss, accum] {
      *loss += mb->a.loss / accum;
      return absl::OkStatus();
    });
    for (int u = e.num_units() - 1; u >= 0; --u) {
      if (auto s = e.PreBackward(u); !s.ok()) return s;
      auto p = Views(e, u, /*grads=*/false);
      if (!p.ok()) return p.status();
      auto g = Views(e, u, /*grads=*/true);
      if (!g.ok()) return g.status();
      compute->Enqueue([u, mb, p = *p, g = *g, loss_scale] {
        const auto widened = Widen(p);
        std::vector<std::vector<float>> local(g.size());
        std::vector<float*> gp(g.size());
        for (size_t i = 0; i < g.size(); ++i) {
          local[i].assign(p[i].count, 0.0f);
          gp[i] = local[i].data();
        }
        Backward(u, Pointers(widened), gp, mb->b, mb->a, mb->d, loss_scale);
        for (size_t i = 0; i < g.size(); ++i) {  // frozen ones (no view) are dropped
          for (int64_t j = 0; j < g[i].count; ++j) {
            StoreFromF32(g[i].data, g[i].dtype, j,
                         LoadAsF32(g[i].data, g[i].dtype, j) + local[i][j]);
          }
        }
        return absl::OkStatus();
      });
      if (auto s = e.PostBackward(u); !s.ok()) return s;
    }
  }
  if (auto s = e.compute_stream().Synchronize(); !s.ok()) return s;  // the loss is read here
  return *loss;
}

absl::Status RunHooksOnly(ZeroEngine& e) {
  for (int k = 0; k < e.options().grad_accum; ++k) {
    for (int u = 0; u < e.num_units(); ++u) {
      if (auto s = e.PreForward(u); !s.ok()) return s;
      if (auto s = e.PostForward(u); !s.ok()) return s;
    }
    for (int u = e.num_units() - 1; u >= 0; --u) {
      if (auto s = e.PreBackward(u); !s.ok()) return s;
      if (auto s = e.PostBackward(u); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace trireme::testing
