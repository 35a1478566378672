// The host data mover: the threads backend's copies and reductions on host
// memory.
#include "runtime/comm/internal/data_mover.h"

#include <algorithm>
#include <cstring>

namespace trireme::internal {
namespace {

// Integers: rank order, accumulated in int64.
template <typename T>
void ReduceInt(const std::vector<const void*>& ins, int64_t begin, int64_t end, void* out_v,
               ReduceOp op) {
  T* out = static_cast<T*>(out_v);
  const int n = static_cast<int>(ins.size());
  for (int64_t i = begin; i < end; ++i) {
    int64_t acc = static_cast<const T*>(ins[0])[i];
    for (int j = 1; j < n; ++j) acc = CombineI64(acc, static_cast<const T*>(ins[j])[i], op);
    out[i - begin] = static_cast<T>(acc);
  }
}

// f32: blocked so the inner loops vectorize; still rank order per element.
// Each block is reduced in a local buffer and then stored, so `out` may alias
// any input (in-place reduce-scatter / all-reduce).
void ReduceF32(const std::vector<const void*>& ins, int64_t begin, int64_t end, float* out,
               ReduceOp op) {
  constexpr int64_t kBlock = 2048;
  alignas(64) float acc[kBlock];
  const int n = static_cast<int>(ins.size());
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t len = std::min(end, b + kBlock) - b;
    std::memcpy(acc, static_cast<const float*>(ins[0]) + b, len * sizeof(float));
    for (int j = 1; j < n; ++j) {
      const float* x = static_cast<const float*>(ins[j]) + b;
      if (op == ReduceOp::kMax) {  // one loop per op, so each vectorizes
        for (int64_t i = 0; i < len; ++i) acc[i] = CombineF32(acc[i], x[i], ReduceOp::kMax);
      } else {
        for (int64_t i = 0; i < len; ++i) acc[i] = CombineF32(acc[i], x[i], ReduceOp::kSum);
      }
    }
    for (int64_t i = 0; i < len; ++i) acc[i] = FinishF32(acc[i], op, n);
    std::memcpy(out + (b - begin), acc, len * sizeof(float));
  }
}

// 16-bit floats: accumulate in f32, round once.
void ReduceHalf(DType dtype, const std::vector<const void*>& ins, int64_t begin, int64_t end,
                void* out, ReduceOp op) {
  const int n = static_cast<int>(ins.size());
  for (int64_t i = begin; i < end; ++i) {
    float acc = LoadAsF32(ins[0], dtype, i);
    for (int j = 1; j < n; ++j) acc = CombineF32(acc, LoadAsF32(ins[j], dtype, i), op);
    StoreFromF32(out, dtype, i - begin, FinishF32(acc, op, n));
  }
}

class HostDataMover final : public DataMover {
 public:
  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status ToHost(void* host, const void* src, int64_t bytes) override {
    return Copy(host, src, bytes);
  }
  absl::Status FromHost(void* dst, const void* host, int64_t bytes) override {
    return Copy(dst, host, bytes);
  }
  absl::Status Reduce(DType dtype, ReduceOp op, const std::vector<const void*>& ins, int64_t begin,
                      int64_t end, void* out) override {
    if (ins.size() == 1) {  // a group of one: the reduction is the input, bit for bit
      const int64_t esize = DTypeSize(dtype);
      return Copy(out, static_cast<const char*>(ins[0]) + begin * esize, (end - begin) * esize);
    }
    switch (dtype) {
      case DType::kF32:
        ReduceF32(ins, begin, end, static_cast<float*>(out), op);
        break;
      case DType::kBF16:
      case DType::kF16:
        ReduceHalf(dtype, ins, begin, end, out, op);
        break;
      case DType::kI32:
        ReduceInt<int32_t>(ins, begin, end, out, op);
        break;
      case DType::kI64:
        ReduceInt<int64_t>(ins, begin, end, out, op);
        break;
      case DType::kU8:
        break;  // rejected by validation
    }
    return absl::OkStatus();
  }
  absl::Status Finish() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<DataMover> NewHostDataMover() { return std::make_unique<HostDataMover>(); }

absl::StatusOr<std::unique_ptr<DataMover>> NewDataMover(const Device& device) {
  if (device.kind == DeviceKind::kCuda) return NewCudaDataMover(device.index);
  return NewHostDataMover();
}

}  // namespace trireme::internal
