// DeviceAllocator with TRIREME_ALLOCATOR_CACHE=0 (set by the BUILD target):
// freed memory goes back to the system instead of the cache -- once no
// stream may still use it -- so AddressSanitizer sees use-after-free.
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "runtime/core/allocator.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "tests/runtime/core/gate.h"

namespace trireme {
namespace {

using ::trireme::testing::Gate;

Buffer MustAllocate(Device device, int64_t bytes, Stream* stream) {
  absl::StatusOr<Buffer> b =
      Buffer::Allocate(device, bytes, MemCategory::kWorkspace, nullptr, stream);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : Buffer();
}

TEST(AllocatorNoCacheTest, TheEnvironmentTurnsCachingOff) {
  const char* v = std::getenv("TRIREME_ALLOCATOR_CACHE");
  ASSERT_NE(v, nullptr) << "run through the BUILD target, which sets it";
  EXPECT_STREQ(v, "0");
}

TEST(AllocatorNoCacheTest, FreeOnAnInlineStreamReturnsMemoryAtOnce) {
  DeviceAllocator* a = DeviceAllocator::For(Device::Cpu());
  ASSERT_NE(a, nullptr);
  InlineStream stream("s");
  const AllocatorStats s0 = a->stats();
  Buffer b = MustAllocate(Device::Cpu(), 8192, &stream);
  ASSERT_NE(b.data(), nullptr);
  EXPECT_GE(a->stats().reserved - s0.reserved, 8192);
  b.Reset();
  const AllocatorStats s1 = a->stats();
  EXPECT_EQ(s1.reserved, s0.reserved);
  EXPECT_EQ(s1.allocated, s0.allocated);
  EXPECT_EQ(s1.pending, s0.pending);

  Buffer again = MustAllocate(Device::Cpu(), 8192, &stream);
  again.Reset();
  const AllocatorStats s2 = a->stats();
  EXPECT_EQ(s2.cache_hits, 0);
  EXPECT_EQ(s2.system_allocations - s0.system_allocations, 2);
  EXPECT_EQ(s2.reserved, s0.reserved);
}

// On an asynchronous stream the block's own stream may still use it at the
// free: the memory leaves the process only once the stream has passed.
TEST(AllocatorNoCacheTest, FreeOnABusyCpuStreamWaitsForTheStream) {
  DeviceAllocator* a = DeviceAllocator::For(Device::CpuAsync());
  ASSERT_NE(a, nullptr);
  CpuStream stream("busy");
  Gate gate;
  stream.Enqueue(gate.BlockingTask());
  const AllocatorStats s0 = a->stats();
  Buffer b = MustAllocate(Device::CpuAsync(), 8192, &stream);
  b.Reset();
  const AllocatorStats s1 = a->stats();
  EXPECT_GT(s1.pending - s0.pending, 0);
  EXPECT_GT(s1.reserved - s0.reserved, 0);

  gate.Open();
  ASSERT_TRUE(stream.Synchronize().ok());
  a->EmptyCache();  // collects pending blocks whose streams have passed
  const AllocatorStats s2 = a->stats();
  EXPECT_EQ(s2.pending, s0.pending);
  EXPECT_EQ(s2.reserved, s0.reserved);
  EXPECT_EQ(s2.cache_hits, 0);
}

// Regression: with the cache off, Free lets the block's own stream (the
// Stream* given to Buffer::Allocate) pass the free point. A buffer may
// outlive that stream (memory.h), and Free once called into the destroyed
// stream (heap-use-after-free under ASan, a segfault without); it now asks
// Stream::Alive first. Run in a child process so a crash fails this test
// only.
TEST(AllocatorNoCacheDeathTest, BufferMayOutliveItsStream) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        Buffer b;
        {
          CpuStream stream("short-lived");
          b = MustAllocate(Device::CpuAsync(), 4096, &stream);
        }  // the stream is gone, the buffer is not
        b.Reset();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace trireme
