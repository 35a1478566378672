// Tests for runtime/core/allocator.h (DeviceAllocator) through Buffer
// (runtime/core/memory.h): stream-ordered reuse of freed blocks, RecordStream
// holding a block back until the other stream passes, Contains, one allocator
// per device, statistics, and the meta device.
//
// The allocators are process-wide singletons shared by every test here, so
// the assertions are on deltas of their statistics; each test starts with an
// empty cache so blocks cached by earlier tests do not satisfy its requests.
#include "runtime/core/allocator.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "tests/runtime/core/gate.h"

namespace trireme {
namespace {

using testing::Gate;

Buffer MustAllocate(Device device, int64_t bytes, MemoryTracker* tracker, Stream* stream) {
  absl::StatusOr<Buffer> b =
      Buffer::Allocate(device, bytes, MemCategory::kWorkspace, tracker, stream);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : Buffer();
}

class AllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(cpu_, nullptr);
    ASSERT_NE(async_, nullptr);
    cpu_->EmptyCache();
    async_->EmptyCache();
  }

  DeviceAllocator* const cpu_ = DeviceAllocator::For(Device::Cpu());
  DeviceAllocator* const async_ = DeviceAllocator::For(Device::CpuAsync());
  MemoryTracker tracker_;
};

TEST_F(AllocatorTest, OneAllocatorPerDevice) {
  EXPECT_NE(cpu_, async_);
  EXPECT_EQ(DeviceAllocator::For(Device::Cpu()), cpu_);  // the same object every time
  EXPECT_EQ(DeviceAllocator::For(Device::CpuAsync()), async_);
  EXPECT_EQ(cpu_->device(), Device::Cpu());
  EXPECT_EQ(async_->device(), Device::CpuAsync());
  EXPECT_EQ(DeviceAllocator::For(Device::Meta()), nullptr);
}

TEST_F(AllocatorTest, FreedBlockIsReusedOnTheSameStream) {
  InlineStream stream("s");
  const AllocatorStats before = cpu_->stats();
  Buffer a = MustAllocate(Device::Cpu(), 3000, &tracker_, &stream);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(a.stream(), &stream);
  void* const p = a.data();
  a.Reset();
  Buffer b = MustAllocate(Device::Cpu(), 3000, &tracker_, &stream);
  EXPECT_EQ(b.data(), p);
  const AllocatorStats after = cpu_->stats();
  EXPECT_EQ(after.allocations - before.allocations, 2);
  EXPECT_EQ(after.cache_hits - before.cache_hits, 1);
  EXPECT_EQ(after.system_allocations - before.system_allocations, 1);
  EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), 3000);
}

TEST_F(AllocatorTest, FreedBlockIsNotReusedOnAnotherStream) {
  InlineStream first("first");
  InlineStream second("second");
  const AllocatorStats before = cpu_->stats();
  Buffer a = MustAllocate(Device::Cpu(), 3000, &tracker_, &first);
  void* const p = a.data();
  a.Reset();
  Buffer b = MustAllocate(Device::Cpu(), 3000, &tracker_, &second);
  ASSERT_NE(b.data(), nullptr);
  EXPECT_NE(b.data(), p);
  const AllocatorStats after = cpu_->stats();
  EXPECT_EQ(after.cache_hits - before.cache_hits, 0);
  EXPECT_EQ(after.system_allocations - before.system_allocations, 2);
}

TEST_F(AllocatorTest, NoStreamBlocksAreReusedOnlyWithoutAStream) {
  InlineStream stream("s");
  const AllocatorStats before = cpu_->stats();
  Buffer a = MustAllocate(Device::Cpu(), 5000, &tracker_, nullptr);
  void* const p = a.data();
  a.Reset();
  Buffer on_stream = MustAllocate(Device::Cpu(), 5000, &tracker_, &stream);
  EXPECT_NE(on_stream.data(), p);
  Buffer no_stream = MustAllocate(Device::Cpu(), 5000, &tracker_, nullptr);
  EXPECT_EQ(no_stream.data(), p);
  EXPECT_EQ(cpu_->stats().cache_hits - before.cache_hits, 1);
}

// A buffer used on a second stream (RecordStream) whose work has not run yet
// stays pending at its free: an allocation on its own stream does not get
// it until the second stream passes the free point.
TEST_F(AllocatorTest, RecordedStreamHoldsTheBlockUntilItPasses) {
  CpuStream own("own");
  CpuStream side("side");
  Gate gate;
  const AllocatorStats before = async_->stats();

  Buffer a = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &own);
  void* const p = a.data();
  ASSERT_NE(p, nullptr);
  a.RecordStream(side);
  side.Enqueue(gate.BlockingTask());  // work on `side` that may still use it
  a.Reset();
  EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), 0);  // the program holds nothing
  EXPECT_GT(async_->stats().pending - before.pending, 0);

  Buffer b = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &own);
  EXPECT_NE(b.data(), p) << "reused while stream 'side' may still use it";
  EXPECT_GT(async_->stats().pending - before.pending, 0);

  gate.Open();
  ASSERT_TRUE(side.Synchronize().ok());
  const int64_t hits = async_->stats().cache_hits;
  Buffer c = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &own);
  EXPECT_EQ(c.data(), p);
  const AllocatorStats after = async_->stats();
  EXPECT_EQ(after.cache_hits - hits, 1);
  EXPECT_EQ(after.pending, before.pending);
}

// RecordStream of the buffer's own stream is not a second use.
TEST_F(AllocatorTest, RecordingTheOwnStreamKeepsImmediateReuse) {
  CpuStream own("own");
  Gate gate;
  own.Enqueue(gate.BlockingTask());
  const AllocatorStats before = async_->stats();
  Buffer a = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &own);
  void* const p = a.data();
  a.RecordStream(own);
  a.Reset();
  EXPECT_EQ(async_->stats().pending, before.pending);
  Buffer b = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &own);
  EXPECT_EQ(b.data(), p);  // ordered after every earlier use by `own` itself
  gate.Open();
  EXPECT_TRUE(own.Synchronize().ok());
}

// memory.h asks only the streams given to RecordStream to outlive a buffer:
// the stream it was allocated for may go first (its destructor ran its work).
// The same with the cache off fails: see allocator_no_cache_test.
TEST_F(AllocatorTest, BufferMayOutliveItsStream) {
  const AllocatorStats before = async_->stats();
  Buffer b;
  {
    CpuStream stream("short-lived");
    b = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &stream);
  }
  b.Reset();
  EXPECT_EQ(async_->stats().allocated, before.allocated);
  EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), 0);
}

TEST_F(AllocatorTest, ContainsLiveAndCachedBlocksOnly) {
  InlineStream stream("s");
  Buffer a = MustAllocate(Device::Cpu(), 1000, &tracker_, &stream);
  const char* p = a.as<char>();
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(cpu_->Contains(p, 1000));
  EXPECT_TRUE(cpu_->Contains(p + 100, 10));
  EXPECT_TRUE(cpu_->Contains(p + 999, 1));
  EXPECT_FALSE(async_->Contains(p, 1000)) << "another device's allocator";

  std::vector<float> host(256);
  EXPECT_FALSE(cpu_->Contains(host.data(), 4));
  EXPECT_FALSE(cpu_->Contains(host.data(), static_cast<int64_t>(host.size() * sizeof(float))));

  a.Reset();  // cached: still this allocator's memory
  EXPECT_TRUE(cpu_->Contains(p, 1000));
  cpu_->EmptyCache();  // returned to the system
  EXPECT_FALSE(cpu_->Contains(p, 1000));
}

// A block a live cpu_async stream freed may still be written by a task it
// has queued: EmptyCache leaves that stream's cache alone, and releases it
// once the stream is gone (its work has run).
TEST_F(AllocatorTest, EmptyCacheKeepsALiveAsyncStreamsBlocks) {
  void* p = nullptr;
  {
    CpuStream stream("s");
    Gate gate;
    Buffer a = MustAllocate(Device::CpuAsync(), 4096, &tracker_, &stream);
    p = a.data();
    char* data = a.as<char>();
    stream.Enqueue(gate.BlockingTask());
    stream.Enqueue([data] {
      std::memset(data, 1, 4096);  // a queued use of the block
      return absl::OkStatus();
    });
    a.Reset();  // into the stream's pool; the task above still writes it
    async_->EmptyCache();
    EXPECT_TRUE(async_->Contains(p, 4096)) << "returned to the system while in use";
    gate.Open();
    ASSERT_TRUE(stream.Synchronize().ok());
  }
  async_->EmptyCache();
  EXPECT_FALSE(async_->Contains(p, 4096));
}

TEST_F(AllocatorTest, ContainsRejectsARangeRunningPastTheBlock) {
  Buffer a = MustAllocate(Device::Cpu(), 1 << 20, &tracker_, nullptr);
  const char* p = a.as<char>();
  EXPECT_TRUE(cpu_->Contains(p, 1 << 20));
  EXPECT_FALSE(cpu_->Contains(p, (1 << 20) + (1 << 20)));
  EXPECT_FALSE(cpu_->Contains(p - 64, 128));
}

TEST_F(AllocatorTest, DevicesDoNotShareBlocksOrStatistics) {
  const AllocatorStats cpu_before = cpu_->stats();
  const AllocatorStats async_before = async_->stats();
  Buffer a = MustAllocate(Device::Cpu(), 2048, &tracker_, nullptr);
  EXPECT_EQ(cpu_->stats().allocations - cpu_before.allocations, 1);
  EXPECT_EQ(async_->stats().allocations, async_before.allocations);
  void* const p = a.data();
  a.Reset();
  Buffer b = MustAllocate(Device::CpuAsync(), 2048, &tracker_, nullptr);
  EXPECT_NE(b.data(), p) << "a cpu block handed out on cpu_async";
  EXPECT_TRUE(async_->Contains(b.data(), 2048));
  EXPECT_FALSE(cpu_->Contains(b.data(), 2048));
  EXPECT_EQ(async_->stats().cache_hits, async_before.cache_hits);
}

TEST_F(AllocatorTest, AllocatedAndReservedMoveAsExpected) {
  constexpr int64_t kBytes = 10000;
  const AllocatorStats s0 = cpu_->stats();
  Buffer a = MustAllocate(Device::Cpu(), kBytes, &tracker_, nullptr);
  const AllocatorStats s1 = cpu_->stats();
  const int64_t block = s1.allocated - s0.allocated;
  EXPECT_GE(block, kBytes);
  EXPECT_LT(block, 2 * kBytes);
  EXPECT_EQ(s1.reserved - s0.reserved, block);
  EXPECT_GE(s1.peak_allocated, s1.allocated);
  EXPECT_GE(s1.peak_reserved, s1.reserved);
  EXPECT_EQ(s1.allocations - s0.allocations, 1);
  EXPECT_EQ(s1.system_allocations - s0.system_allocations, 1);

  a.Reset();  // cached: no longer allocated, still reserved
  const AllocatorStats s2 = cpu_->stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_EQ(s2.reserved, s1.reserved);
  EXPECT_EQ(s2.pending, s0.pending);

  Buffer b = MustAllocate(Device::Cpu(), kBytes, &tracker_, nullptr);  // from the cache
  const AllocatorStats s3 = cpu_->stats();
  EXPECT_EQ(s3.allocated, s1.allocated);
  EXPECT_EQ(s3.reserved, s1.reserved);
  EXPECT_EQ(s3.system_allocations, s1.system_allocations);
  b.Reset();

  cpu_->EmptyCache();  // cached blocks go back to the system
  const AllocatorStats s4 = cpu_->stats();
  EXPECT_EQ(s4.reserved, s0.reserved);
  EXPECT_EQ(s4.allocated, s0.allocated);
}

TEST_F(AllocatorTest, BlocksAre64ByteAlignedAndWritable) {
  InlineStream stream("s");
  for (int64_t bytes : {int64_t{1}, int64_t{100}, int64_t{4097}, int64_t{3} << 20}) {
    SCOPED_TRACE(bytes);
    Buffer b = MustAllocate(Device::CpuAsync(), bytes, &tracker_, &stream);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
    std::memset(b.data(), 0x3c, static_cast<size_t>(bytes));
    EXPECT_EQ(b.as<uint8_t>()[bytes - 1], 0x3c);
    EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), bytes);
  }
}

TEST_F(AllocatorTest, MetaHasNoAllocatorButBuffersAreTracked) {
  const AllocatorStats cpu_before = cpu_->stats();
  const AllocatorStats async_before = async_->stats();
  InlineStream stream("meta", Device::Meta());
  {
    Buffer b = MustAllocate(Device::Meta(), int64_t{1} << 40, &tracker_, &stream);
    EXPECT_EQ(b.data(), nullptr);
    EXPECT_EQ(b.bytes(), int64_t{1} << 40);
    EXPECT_EQ(b.device(), Device::Meta());
    EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), int64_t{1} << 40);
    b.RecordStream(stream);  // nothing to hold back
  }
  EXPECT_EQ(tracker_.current(MemCategory::kWorkspace), 0);
  EXPECT_EQ(tracker_.peak(MemCategory::kWorkspace), int64_t{1} << 40);
  EXPECT_EQ(cpu_->stats().allocations, cpu_before.allocations);
  EXPECT_EQ(async_->stats().allocations, async_before.allocations);
}

TEST_F(AllocatorTest, ZeroByteBuffersTakeNoBlock) {
  const AllocatorStats before = cpu_->stats();
  Buffer b = MustAllocate(Device::Cpu(), 0, &tracker_, nullptr);
  EXPECT_EQ(b.bytes(), 0);
  EXPECT_EQ(cpu_->stats().allocations, before.allocations);
}

TEST_F(AllocatorTest, ConcurrentAllocationsOnSeparateStreamsBalance) {
  const AllocatorStats before = async_->stats();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] {
      CpuStream stream("worker");
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<Buffer> b = Buffer::Allocate(Device::CpuAsync(), 512 * (1 + i % 5),
                                                    MemCategory::kWorkspace, nullptr, &stream);
        if (b.ok()) std::memset(b->data(), i, static_cast<size_t>(b->bytes()));
      }
      EXPECT_TRUE(stream.Synchronize().ok());
    });
  }
  for (std::thread& t : threads) t.join();
  const AllocatorStats after = async_->stats();
  EXPECT_EQ(after.allocations - before.allocations, 800);
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_GT(after.cache_hits - before.cache_hits, 0);
}

}  // namespace
}  // namespace trireme
