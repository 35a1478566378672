// Tests for runtime/core/tensor.h: owned tensors (Empty) and borrowed ones,
// slices and reshapes sharing memory, views, names, and the memory being
// tracked until the last reference goes.
#include "runtime/core/tensor.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/allocator.h"
#include "runtime/core/device.h"
#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "tests/runtime/core/gate.h"

namespace trireme {
namespace {

using ::trireme::testing::Gate;

using ::testing::HasSubstr;

constexpr MemCategory kAct = MemCategory::kActivation;

Tensor MustEmpty(Device device, DType dtype, Shape shape, MemoryTracker* tracker,
                 Stream* stream = nullptr) {
  absl::StatusOr<Tensor> t = Tensor::Empty(device, dtype, std::move(shape), kAct, tracker, stream);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : Tensor();
}

TEST(ShapeTest, NumElementsAndShapeString) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({7}), 7);
  EXPECT_EQ(NumElements({2, 8, 32}), 512);
  EXPECT_EQ(NumElements({3, 0, 5}), 0);
  EXPECT_EQ(ShapeString({}), "[]");
  EXPECT_EQ(ShapeString({7}), "[7]");
  EXPECT_EQ(ShapeString({2, 8, 32}), "[2, 8, 32]");
}

TEST(TensorTest, DefaultIsUndefined) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.bytes(), 0);
}

TEST(TensorTest, EmptyAllocatesAndDescribesItself) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Cpu(), DType::kF32, {2, 8, 32}, &tracker);
  ASSERT_TRUE(t.defined());
  ASSERT_NE(t.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  EXPECT_EQ(t.device(), Device::Cpu());
  EXPECT_EQ(t.dtype(), DType::kF32);
  EXPECT_EQ(t.shape(), (Shape{2, 8, 32}));
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(2), 32);
  EXPECT_EQ(t.numel(), 512);
  EXPECT_EQ(t.bytes(), 2048);
  EXPECT_EQ(t.as<float>(), t.data());
  EXPECT_EQ(tracker.current(kAct), 2048);
  std::memset(t.data(), 0, static_cast<size_t>(t.bytes()));  // writable, all of it
}

TEST(TensorTest, BytesFollowTheDType) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::CpuAsync(), DType::kBF16, {7, 13}, &tracker);
  EXPECT_EQ(t.numel(), 91);
  EXPECT_EQ(t.bytes(), 182);
  EXPECT_EQ(tracker.current(kAct), 182);
}

TEST(TensorTest, ScalarAndEmptyShapes) {
  MemoryTracker tracker;
  Tensor scalar = MustEmpty(Device::Cpu(), DType::kF32, {}, &tracker);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_NE(scalar.data(), nullptr);
  Tensor empty = MustEmpty(Device::Cpu(), DType::kF32, {3, 0}, &tracker);
  EXPECT_TRUE(empty.defined());
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.bytes(), 0);
  EXPECT_EQ(tracker.current(kAct), 4);
}

TEST(TensorTest, NegativeDimensionIsInvalidArgument) {
  MemoryTracker tracker;
  absl::StatusOr<Tensor> t =
      Tensor::Empty(Device::Cpu(), DType::kF32, {2, -3}, kAct, &tracker, nullptr);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("[2, -3]"));
  EXPECT_EQ(tracker.snapshot().total_peak, 0);
}

TEST(TensorTest, CudaWithoutADeviceIsAnError) {
  absl::StatusOr<int> n = CudaDeviceCount();
  ASSERT_TRUE(n.ok()) << n.status();
  if (*n > 0) GTEST_SKIP() << "this machine has a CUDA device";
  MemoryTracker tracker;
  absl::StatusOr<Tensor> t =
      Tensor::Empty(Device::Cuda(0), DType::kF32, {4}, kAct, &tracker, nullptr);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kUnavailable) << t.status();
  EXPECT_EQ(tracker.current(kAct), 0);
}

TEST(TensorTest, MetaTracksButHoldsNoMemory) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Meta(), DType::kF32, {1024, 1024, 1024}, &tracker);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.bytes(), int64_t{4} << 30);
  EXPECT_EQ(tracker.current(kAct), int64_t{4} << 30);
  Tensor s = t.Slice(1024, {10});
  EXPECT_EQ(s.data(), nullptr);  // still nothing to point at
  EXPECT_EQ(s.numel(), 10);
  t.Reset();
  s.Reset();
  EXPECT_EQ(tracker.current(kAct), 0);
}

TEST(TensorTest, CopiesShareMemoryFreedWithTheLastReference) {
  MemoryTracker tracker;
  Tensor a = MustEmpty(Device::Cpu(), DType::kF32, {16}, &tracker);
  Tensor b = a;  // NOLINT(performance-unnecessary-copy-initialization): testing copies
  EXPECT_EQ(b.data(), a.data());
  b.as<float>()[3] = 42.0f;
  EXPECT_EQ(a.as<float>()[3], 42.0f);
  EXPECT_EQ(tracker.current(kAct), 64);  // one allocation, however many copies

  a.Reset();
  EXPECT_FALSE(a.defined());
  EXPECT_EQ(tracker.current(kAct), 64);  // b still holds it
  EXPECT_EQ(b.as<float>()[3], 42.0f);
  b.Reset();
  EXPECT_EQ(tracker.current(kAct), 0);
}

TEST(TensorTest, SliceSharesMemoryAtTheOffset) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Cpu(), DType::kF32, {4, 6}, &tracker);
  for (int i = 0; i < 24; ++i) t.as<float>()[i] = static_cast<float>(i);
  Tensor row2 = t.Slice(12, {6});
  EXPECT_EQ(row2.as<float>(), t.as<float>() + 12);
  EXPECT_EQ(row2.shape(), (Shape{6}));
  EXPECT_EQ(row2.numel(), 6);
  EXPECT_EQ(row2.bytes(), 24);
  EXPECT_EQ(row2.dtype(), DType::kF32);
  EXPECT_EQ(row2.device(), Device::Cpu());
  EXPECT_EQ(row2.as<float>()[0], 12.0f);
  row2.as<float>()[5] = -1.0f;
  EXPECT_EQ(t.as<float>()[17], -1.0f);

  // A slice of a slice, in elements of a 16-bit dtype.
  Tensor h = MustEmpty(Device::Cpu(), DType::kBF16, {10}, &tracker);
  Tensor inner = h.Slice(4, {6}).Slice(2, {3});
  EXPECT_EQ(static_cast<char*>(inner.data()), static_cast<char*>(h.data()) + 12);
}

TEST(TensorTest, SliceKeepsTheMemoryAlive) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Cpu(), DType::kF32, {8}, &tracker);
  t.as<float>()[7] = 3.5f;
  Tensor tail = t.Slice(6, {2});
  t.Reset();
  EXPECT_EQ(tracker.current(kAct), 32);
  EXPECT_EQ(tail.as<float>()[1], 3.5f);
  tail.Reset();
  EXPECT_EQ(tracker.current(kAct), 0);
}

TEST(TensorTest, ReshapedKeepsDataAndCount) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Cpu(), DType::kF32, {2, 8, 32}, &tracker);
  Tensor r = t.Reshaped({16, 32});
  EXPECT_EQ(r.data(), t.data());
  EXPECT_EQ(r.shape(), (Shape{16, 32}));
  EXPECT_EQ(r.numel(), 512);
  EXPECT_EQ(r.bytes(), t.bytes());
  EXPECT_EQ(t.shape(), (Shape{2, 8, 32}));  // the original is unchanged
  t.Reset();
  EXPECT_EQ(tracker.current(kAct), 2048);  // r holds the memory
}

TEST(TensorTest, BorrowTracksNothingAndDoesNotOwn) {
  std::vector<float> host(12, 1.0f);
  Tensor t = Tensor::Borrow(host.data(), Device::Cpu(), DType::kF32, {3, 4});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.data(), host.data());
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.shape(), (Shape{3, 4}));
  Tensor s = t.Slice(4, {4});
  EXPECT_EQ(s.as<float>(), host.data() + 4);
  t.Reset();
  s.Reset();
  EXPECT_EQ(host[11], 1.0f);  // untouched, still ours

  Tensor meta = Tensor::Borrow(nullptr, Device::Meta(), DType::kF16, {5});
  EXPECT_TRUE(meta.defined());
  EXPECT_EQ(meta.data(), nullptr);
  EXPECT_EQ(meta.bytes(), 10);
}

TEST(TensorTest, ViewCoversTheTensor) {
  MemoryTracker tracker;
  Tensor t = MustEmpty(Device::Cpu(), DType::kF16, {3, 5}, &tracker);
  const MutView v = t.view();
  EXPECT_EQ(v.data, t.data());
  EXPECT_EQ(v.count, 15);
  EXPECT_EQ(v.dtype, DType::kF16);
  EXPECT_EQ(v.bytes(), 30);
  const ConstView c = t.Slice(5, {5}).view();
  EXPECT_EQ(c.data, static_cast<char*>(t.data()) + 10);
  EXPECT_EQ(c.count, 5);
}

TEST(TensorTest, ToStringNamesDTypeShapeAndDevice) {
  MemoryTracker tracker;
  EXPECT_EQ(MustEmpty(Device::CpuAsync(), DType::kF32, {2, 8, 32}, &tracker).ToString(),
            "f32[2, 8, 32] on cpu_async");
  EXPECT_EQ(MustEmpty(Device::Cpu(), DType::kBF16, {7}, &tracker).ToString(), "bf16[7] on cpu");
  EXPECT_EQ(Tensor::Borrow(nullptr, Device::Meta(), DType::kI32, {}).ToString(), "i32[] on meta");
  EXPECT_EQ(MustEmpty(Device::Cpu(), DType::kF32, {4, 6}, &tracker).Reshaped({24}).ToString(),
            "f32[24] on cpu");
}

// Tensor::RecordStream reaches the owning buffer: its memory waits for the
// other stream at the free.
TEST(TensorTest, RecordStreamHoldsTheMemoryForTheOtherStream) {
  DeviceAllocator* a = DeviceAllocator::For(Device::CpuAsync());
  ASSERT_NE(a, nullptr);
  CpuStream own("own");
  CpuStream side("side");
  Gate gate;
  side.Enqueue(gate.BlockingTask());
  MemoryTracker tracker;
  const int64_t pending_before = a->stats().pending;
  Tensor t = MustEmpty(Device::CpuAsync(), DType::kF32, {1000}, &tracker, &own);
  Tensor view = t.Slice(10, {10});
  view.RecordStream(side);  // through any reference
  t.Reset();
  view.Reset();
  EXPECT_EQ(tracker.current(kAct), 0);
  EXPECT_GT(a->stats().pending - pending_before, 0);
  gate.Open();
  ASSERT_TRUE(side.Synchronize().ok());
  // The free is also ordered after the owning stream's work: its marker must
  // have run too (it races with EmptyCache otherwise -- seen under ASan).
  ASSERT_TRUE(own.Synchronize().ok());
  a->EmptyCache();  // collects it
  EXPECT_EQ(a->stats().pending, pending_before);

  // Borrowed memory has no owner: nothing to record.
  std::vector<float> host(4);
  Tensor::Borrow(host.data(), Device::Cpu(), DType::kF32, {4}).RecordStream(side);
}

}  // namespace
}  // namespace trireme
