// Writes what the PyTorch cross-check needs into the directory argv[1]: the
// tiny GPT's configuration, initial weights, one micro-batch of tokens, and
// Trireme's loss and gradients for that micro-batch at (1, 1, 1), computed
// on the device argv[2] names (cpu by default; cuda on a GPU machine).
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

}  // namespace

int main(int argc, char** argv) {
  using namespace trireme;
  if (argc < 2) {
    fprintf(stderr, "usage: export_for_torch DIR [DEVICE]\n");
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
    cfg << c.layers << " " << c.hidden << " " << c.heads << " " << c.vocab << " " << c.seq << " "
        << c.micro_batch << " " << c.ln_eps << "\n";
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
