// Writes what the PyTorch cross-check needs into the directory argv[1]: the
// tiny model's configuration, initial weights, one micro-batch of tokens, and
// Trireme's loss and gradients for that micro-batch at (1, 1, 1), computed
// on the device argv[2] names (cpu by default; cuda on a GPU machine), for
// the architecture argv[3] names (gpt2 by default; see Variant()).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/gpt.h"
#include "models/gpt_data.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/status.h"

namespace {

void WriteFloats(const std::string& path, const float* v, int64_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v), n * 4);
}

// The tiny model with one architectural option changed, or all of Llama's.
bool Variant(const std::string& name, trireme::GptConfig* c) {
  using namespace trireme;
  if (name == "rmsnorm" || name == "llama") c->norm = NormKind::kRmsNorm;
  if (name == "rope" || name == "llama") c->position = PositionKind::kRope;
  if (name == "swiglu" || name == "llama") c->mlp = MlpKind::kSwiGlu;
  if (name == "kv1") c->kv_heads = 1;
  if (name == "kv2" || name == "llama") c->kv_heads = 2;
  if (name == "window") c->sliding_window = 3;
  if (name == "untied" || name == "llama") c->tied_head = false;
  if (name == "nobias" || name == "llama") c->bias = false;
  if (name == "ffn") c->ffn = 40;
  for (const char* known : {"gpt2", "rmsnorm", "rope", "swiglu", "kv1", "kv2", "window", "untied",
                            "nobias", "ffn", "llama"}) {
    if (name == known) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trireme;
  if (argc < 2) {
    fprintf(stderr, "usage: export_for_torch DIR [DEVICE] [VARIANT]\n");
    return 2;
  }
  const std::string dir = argv[1];
  absl::StatusOr<Device> device = ParseDevice(argc > 2 ? argv[2] : "cpu");
  if (!device.ok()) {
    fprintf(stderr, "%s\n", device.status().ToString().c_str());
    return 2;
  }
  GptConfig c;
  c.layers = 2;
  c.hidden = 32;
  c.heads = 4;
  c.vocab = 61;
  c.seq = 7;
  c.micro_batch = 3;
  const std::string variant = argc > 3 ? argv[3] : "gpt2";
  if (!Variant(variant, &c)) {
    fprintf(stderr, "export_for_torch: unknown variant '%s'\n", variant.c_str());
    return 2;
  }
  absl::Status s = RunOnRanks(1, [&](Communicator& world) -> absl::Status {
    EngineOptions o;
    o.stage = 0;
    o.device = *device;
    MemoryTracker mem;
    const GptPlace place;
    ASSIGN_OR_RETURN(auto e, ZeroEngine::Create(world, GptUnits(c, place), o, &mem));
    RETURN_IF_ERROR(
        e->Initialize([&](const ParamInfo& p, float* v) { return GptInit(c, place, p, v); }));
    // Initial weights, by name (the tied head is wte itself).
    for (int u = 0; u < e->num_units(); ++u) {
      for (const ParamInfo& p : e->unit_params(u)) {
        if (!p.tied_to.empty()) continue;
        ASSIGN_OR_RETURN(std::vector<float> v, e->GatherFull(p.name));
        WriteFloats(absl::StrCat(dir, "/", p.name, ".bin"), v.data(), p.numel);
      }
    }
    const std::vector<int32_t> tokens = GptBatch(c, 1, 0);
    std::ofstream(absl::StrCat(dir, "/tokens.bin"), std::ios::binary)
        .write(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 4);
    GptStage stage(c, place, *e, world, e->compute_stream());
    ASSIGN_OR_RETURN(const double loss, stage.ForwardBackward(0, tokens));
    RETURN_IF_ERROR(e->ReduceGradients());
    for (int u = 0; u < e->num_units(); ++u) {
      ASSIGN_OR_RETURN(std::vector<float> g, e->GradShard(u));
      for (const ParamInfo& p : e->unit_params(u)) {
        if (!p.tied_to.empty()) continue;
        WriteFloats(absl::StrCat(dir, "/", p.name, ".grad.bin"), g.data() + p.unit_range.begin,
                    p.numel);
      }
    }
    std::ofstream cfg(absl::StrCat(dir, "/config.txt"));
    cfg << "layers " << c.layers << "\nhidden " << c.hidden << "\nheads " << c.heads
        << "\nkv_heads " << c.kv() << "\nvocab " << c.vocab << "\nseq " << c.seq << "\nbatch "
        << c.micro_batch << "\neps " << c.ln_eps << "\nffn " << c.ffn_width() << "\nnorm "
        << (c.norm == NormKind::kRmsNorm ? "rmsnorm" : "layernorm") << "\nposition "
        << (c.position == PositionKind::kRope ? "rope" : "learned") << "\nrope_base " << c.rope_base
        << "\nmlp " << (c.mlp == MlpKind::kSwiGlu ? "swiglu" : "gelu") << "\nwindow "
        << c.sliding_window << "\ntied " << (c.tied_head ? 1 : 0) << "\nbias " << (c.bias ? 1 : 0)
        << "\n";
    char buf[64];
    snprintf(buf, sizeof(buf), "%.9g\n", loss);
    std::ofstream(absl::StrCat(dir, "/loss.txt")) << buf;
    return absl::OkStatus();
  });
  if (!s.ok()) {
    fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
