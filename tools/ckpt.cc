// Inspects a Trireme checkpoint: validates it completely (manifest, every
// file's size and CRC32C, headers, coverage) and prints its step, grid,
// engine and trainer state and tensors; optionally writes one global tensor
// as raw little-endian f32.
//
//   ./bazelw run //tools:ckpt -- --dir=/tmp/ck                  (latest)
//   ./bazelw run //tools:ckpt -- --dir=/tmp/ck/step-00000100 --tensor=wte --state=m --out=m.f32
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/status.h"

ABSL_FLAG(std::string, dir, "", "a checkpoint directory, or a root with `latest`");
ABSL_FLAG(std::string, tensor, "", "a tensor to write with --out");
ABSL_FLAG(std::string, state, "master", "master, m or v");
ABSL_FLAG(std::string, out, "", "where --tensor goes (raw f32)");

namespace trireme {
namespace {

absl::Status Main() {
  ASSIGN_OR_RETURN(std::string dir, checkpoint::Resolve(absl::GetFlag(FLAGS_dir)));
  ASSIGN_OR_RETURN(checkpoint::ManifestSummary m, checkpoint::Inspect(dir));
  printf("%s: valid (every file's size and CRC32C checked)\n", dir.c_str());
  printf("step %lld; states %s\ngrid %s\nengine %s\ntrainer %s\n", static_cast<long long>(m.step),
         absl::StrJoin(m.states, ", ").c_str(), m.grid.Dump().c_str(), m.engine.Dump().c_str(),
         m.trainer.Dump().c_str());
  int64_t total = 0;
  for (const auto& t : m.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    total += n;
    printf("  %-16s [%s]\n", t.name.c_str(), absl::StrJoin(t.shape, ", ").c_str());
  }
  printf("%zu tensors, %lld parameters\n", m.tensors.size(), static_cast<long long>(total));
  const std::string name = absl::GetFlag(FLAGS_tensor);
  if (!name.empty()) {
    ASSIGN_OR_RETURN(std::vector<float> v,
                     checkpoint::ReadTensor(dir, name, absl::GetFlag(FLAGS_state)));
    const std::string out = absl::GetFlag(FLAGS_out);
    if (out.empty()) return absl::InvalidArgumentError("--tensor needs --out");
    std::ofstream f(out, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
    if (!f) return absl::InternalError("writing " + out);
    printf("wrote %s %s (%zu floats) to %s\n", name.c_str(), absl::GetFlag(FLAGS_state).c_str(),
           v.size(), out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = trireme::Main(); !s.ok()) {
    fprintf(stderr, "ckpt: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
