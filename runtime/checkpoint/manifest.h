// The checkpoint manifest (manifest.json) as data, and its strict parser:
// every structural rule -- format and version, file names that cannot leave
// the directory, sizes and CRC32C fields, tensor shapes, each chunk's block
// inside its view and range inside its block, and every tensor covered by its
// chunks exactly once -- checked without touching any file. Also the map from
// a chunk's block to global element runs. Separate from checkpoint.h so the
// parser can be fuzzed alone.
#ifndef TRIREME_RUNTIME_CHECKPOINT_MANIFEST_H_
#define TRIREME_RUNTIME_CHECKPOINT_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/core/json.h"

namespace trireme::checkpoint {

inline constexpr int kFormatVersion = 1;
inline constexpr int64_t kMaxRuns = int64_t{1} << 24;  // per tensor, for coverage checks

// prod(dims) without overflow (false on overflow or a negative dimension).
bool Product(const std::vector<int64_t>& dims, int64_t* out);

// A block of a global tensor: a hyperrectangle of a row-major view.
struct Block {
  std::vector<int64_t> view, offset, shape;
  int64_t numel = 0;  // of the block
  int64_t global_numel = 0;
};

// Fills defaults (view = global shape, offset = 0, shape = view) and checks
// consistency; errors start with `where`.
absl::StatusOr<Block> MakeBlock(const std::vector<int64_t>& global_shape,
                                const std::vector<int64_t>& view,
                                const std::vector<int64_t>& offset,
                                const std::vector<int64_t>& shape, absl::string_view where);

// fn(global_begin, block_begin, length) for the runs of block elements
// [begin, end) that are contiguous in the global tensor.
template <typename Fn>
void ForEachRun(const Block& b, int64_t begin, int64_t end, Fn fn) {
  const size_t nd = b.view.size();
  std::vector<int64_t> stride(nd, 1);
  for (size_t d = nd; d-- > 1;) stride[d - 1] = stride[d] * b.view[d];
  std::vector<int64_t> idx(nd);
  int64_t i = begin;
  while (i < end) {
    int64_t rem = i, g = 0;
    for (size_t d = nd; d-- > 0;) {
      idx[d] = rem % b.shape[d];
      rem /= b.shape[d];
    }
    for (size_t d = 0; d < nd; ++d) g += (b.offset[d] + idx[d]) * stride[d];
    const int64_t len = nd == 0 ? 1 : std::min(b.shape[nd - 1] - idx[nd - 1], end - i);
    fn(g, i, len);
    i += len;
  }
}

// The number of runs ForEachRun makes.
int64_t RunCount(const Block& b, int64_t begin, int64_t end);

struct Chunk {
  std::string file;
  Block block;
  int64_t begin = 0, end = 0;
};

struct TensorEntry {
  std::vector<int64_t> shape;
  std::vector<Chunk> chunks;
};

struct FileEntry {
  int64_t size = 0;
  uint32_t crc = 0;
};

struct Manifest {
  int64_t step = 0;
  std::vector<std::string> states;
  Json grid, trainer, engine;
  std::map<std::string, FileEntry> files;
  std::map<std::string, TensorEntry> tensors;
};

bool IsRankFileName(absl::string_view s);
absl::StatusOr<Manifest> ParseManifest(absl::string_view text);

}  // namespace trireme::checkpoint

#endif  // TRIREME_RUNTIME_CHECKPOINT_MANIFEST_H_
