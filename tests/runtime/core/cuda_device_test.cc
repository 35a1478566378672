// Tests for the CUDA device, buffers and streams (--config=cuda only). Fails,
// naming the missing device or driver, without a GPU (Bazel runs it only where
// it found one).
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "runtime/core/cuda_stream.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/stream.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme {
namespace {

TEST(CudaDeviceTest, BufferAndStream) {
  EXPECT_TRUE(BuiltWithCuda());
  TRIREME_REQUIRE_CUDA_DEVICE();

  MemoryTracker tracker("gpu0");
  constexpr int64_t kBytes = 3 << 20;
  {
    absl::StatusOr<Buffer> b =
        Buffer::Allocate(Device::Cuda(0), kBytes, MemCategory::kParam, &tracker);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_NE(b->data(), nullptr);
    EXPECT_EQ(b->bytes(), kBytes);
    EXPECT_EQ(b->device(), Device::Cuda(0));
    EXPECT_EQ(tracker.current(MemCategory::kParam), kBytes);

    absl::StatusOr<std::unique_ptr<CudaStream>> stream = CudaStream::Create(0);
    ASSERT_TRUE(stream.ok()) << stream.status();
    EXPECT_EQ((*stream)->device(), Device::Cuda(0));
    std::unique_ptr<Event> event = (*stream)->NewEvent();
    ASSERT_NE(event, nullptr);
    ASSERT_TRUE((*stream)->Record(event.get()).ok());
    EXPECT_TRUE(event->Synchronize(absl::Seconds(30)).ok());
    EXPECT_TRUE(event->Query());
    EXPECT_TRUE((*stream)->Synchronize().ok());

    // A CPU event is not something a CUDA stream can record.
    CpuEvent cpu_event;
    EXPECT_EQ((*stream)->Record(&cpu_event).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(tracker.current(MemCategory::kParam), 0);
  EXPECT_EQ(tracker.peak(MemCategory::kParam), kBytes);
}

}  // namespace
}  // namespace trireme
