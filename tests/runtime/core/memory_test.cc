// Tests for runtime/core/memory.h (MemoryTracker, Buffer, FormatBytes) and
// runtime/core/device.h (names, ParseDevice, properties, and the CUDA entry
// points in a build without CUDA), and runtime/core/host_memory.h (what the
// kernel reports).
#include "runtime/core/memory.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/device.h"
#include "runtime/core/host_memory.h"
#include "runtime/core/json.h"
#include "runtime/core/pinned.h"

namespace trireme {
namespace {

using ::testing::HasSubstr;

constexpr MemCategory kAllCategories[] = {
    MemCategory::kParam,      MemCategory::kGrad, MemCategory::kMaster,    MemCategory::kOptim,
    MemCategory::kActivation, MemCategory::kComm, MemCategory::kWorkspace,
};

int64_t Total(const MemoryTracker& t) { return t.snapshot().total_current; }

// ---------------------------------------------------------------------------
// MemoryTracker

TEST(MemoryTrackerTest, StartsEmpty) {
  MemoryTracker t("r0");
  EXPECT_EQ(t.name(), "r0");
  const MemoryTracker::Snapshot s = t.snapshot();
  for (int i = 0; i < kNumMemCategories; ++i) {
    EXPECT_EQ(s.current[i], 0);
    EXPECT_EQ(s.peak[i], 0);
  }
  EXPECT_EQ(s.total_current, 0);
  EXPECT_EQ(s.total_peak, 0);
}

TEST(MemoryTrackerTest, CategoryNames) {
  const char* want[] = {"param", "grad", "master", "optim", "activation", "comm", "workspace"};
  for (int i = 0; i < kNumMemCategories; ++i) {
    EXPECT_STREQ(MemCategoryName(kAllCategories[i]), want[i]);
  }
}

TEST(MemoryTrackerTest, CurrentAndPeakPerCategory) {
  MemoryTracker t;
  t.RecordAlloc(MemCategory::kParam, 100);
  t.RecordAlloc(MemCategory::kGrad, 30);
  t.RecordAlloc(MemCategory::kParam, 50);
  EXPECT_EQ(t.current(MemCategory::kParam), 150);
  EXPECT_EQ(t.peak(MemCategory::kParam), 150);
  EXPECT_EQ(t.current(MemCategory::kGrad), 30);
  EXPECT_EQ(t.current(MemCategory::kOptim), 0);

  t.RecordFree(MemCategory::kParam, 120);
  EXPECT_EQ(t.current(MemCategory::kParam), 30);
  EXPECT_EQ(t.peak(MemCategory::kParam), 150);  // the peak stays
  t.RecordAlloc(MemCategory::kParam, 20);
  EXPECT_EQ(t.current(MemCategory::kParam), 50);
  EXPECT_EQ(t.peak(MemCategory::kParam), 150);

  const MemoryTracker::Snapshot s = t.snapshot();
  EXPECT_EQ(s.total_current, 80);
  EXPECT_EQ(s.total_peak, 180);
  EXPECT_EQ(s.current[static_cast<int>(MemCategory::kGrad)], 30);
  EXPECT_EQ(s.peak[static_cast<int>(MemCategory::kGrad)], 30);
}

TEST(MemoryTrackerTest, TotalPeakIsPeakOfTheSum) {
  MemoryTracker t;
  t.RecordAlloc(MemCategory::kActivation, 1000);
  t.RecordFree(MemCategory::kActivation, 1000);
  t.RecordAlloc(MemCategory::kComm, 600);
  const MemoryTracker::Snapshot s = t.snapshot();
  // The sum of per-category peaks would be 1600; the two never coexisted.
  EXPECT_EQ(s.total_peak, 1000);
  EXPECT_EQ(s.total_current, 600);
  EXPECT_EQ(t.peak(MemCategory::kActivation), 1000);
  EXPECT_EQ(t.peak(MemCategory::kComm), 600);
}

TEST(MemoryTrackerTest, ResetPeakSetsPeakToCurrent) {
  MemoryTracker t;
  t.RecordAlloc(MemCategory::kOptim, 500);
  t.RecordAlloc(MemCategory::kWorkspace, 300);
  t.RecordFree(MemCategory::kOptim, 200);
  t.RecordFree(MemCategory::kWorkspace, 300);
  t.ResetPeak();
  EXPECT_EQ(t.peak(MemCategory::kOptim), 300);
  EXPECT_EQ(t.peak(MemCategory::kWorkspace), 0);
  EXPECT_EQ(t.snapshot().total_peak, 300);
  t.RecordAlloc(MemCategory::kWorkspace, 10);
  EXPECT_EQ(t.peak(MemCategory::kWorkspace), 10);
  EXPECT_EQ(t.snapshot().total_peak, 310);
}

TEST(MemoryTrackerTest, ToTableNamesEveryCategory) {
  MemoryTracker t("rank3");
  t.RecordAlloc(MemCategory::kMaster, 3 << 20);
  const std::string table = t.ToTable();
  EXPECT_THAT(table, HasSubstr("rank3"));
  for (MemCategory c : kAllCategories) EXPECT_THAT(table, HasSubstr(MemCategoryName(c)));
  EXPECT_THAT(table, HasSubstr("total"));
  EXPECT_THAT(table, HasSubstr("3.00 MiB"));
}

TEST(MemoryTrackerTest, ToJson) {
  MemoryTracker t("rank1");
  t.RecordAlloc(MemCategory::kParam, 4096);
  t.RecordFree(MemCategory::kParam, 1024);
  t.RecordAlloc(MemCategory::kGrad, 7);
  // Larger than 32 bits, to catch a narrowing format.
  t.RecordAlloc(MemCategory::kOptim, int64_t{5} << 32);
  const std::string json = t.ToJson();
  EXPECT_THAT(json, HasSubstr("\"name\":\"rank1\""));
  EXPECT_THAT(json, HasSubstr("\"param\":{\"current\":3072,\"peak\":4096}"));
  EXPECT_THAT(json, HasSubstr("\"grad\":{\"current\":7,\"peak\":7}"));
  EXPECT_THAT(json, HasSubstr("\"optim\":{\"current\":21474836480,\"peak\":21474836480}"));
  EXPECT_THAT(json, HasSubstr("\"workspace\":{\"current\":0,\"peak\":0}"));
  EXPECT_THAT(json, HasSubstr("\"total\":{\"current\":21474839559,\"peak\":21474839559}"));
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
  // A name that needs escaping is escaped (valid JSON that reads back).
  MemoryTracker q("rank \"2\"\\x");
  absl::StatusOr<Json> parsed = Json::Parse(q.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << ": " << q.ToJson();
  EXPECT_EQ(parsed->Find("name")->string_value(), "rank \"2\"\\x");
}

TEST(MemoryTrackerTest, ConcurrentRecordsBalance) {
  MemoryTracker t;
  constexpr int kThreads = 4;
  constexpr int kIters = 20000;
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&t, w] {
      for (int i = 0; i < kIters; ++i) {
        const MemCategory c = kAllCategories[(w + i) % kNumMemCategories];
        const int64_t bytes = 1 + (i % 13);
        t.RecordAlloc(c, bytes);
        t.RecordFree(c, bytes);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  const MemoryTracker::Snapshot s = t.snapshot();
  for (int i = 0; i < kNumMemCategories; ++i) {
    EXPECT_EQ(s.current[i], 0) << MemCategoryName(kAllCategories[i]);
    EXPECT_GT(s.peak[i], 0);
    EXPECT_LE(s.peak[i], kThreads * 13);
  }
  EXPECT_EQ(s.total_current, 0);
  EXPECT_GE(s.total_peak, 1);
  EXPECT_LE(s.total_peak, kThreads * 13);
}

// ---------------------------------------------------------------------------
// Buffer on cpu

TEST(BufferTest, CpuIsAlignedWritableAndRecordedExactly) {
  for (int64_t bytes : {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{1000}, int64_t{1} << 20}) {
    SCOPED_TRACE(bytes);
    MemoryTracker t;
    {
      absl::StatusOr<Buffer> b =
          Buffer::Allocate(Device::Cpu(), bytes, MemCategory::kActivation, &t);
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_NE(b->data(), nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 64, 0u);
      EXPECT_EQ(b->bytes(), bytes);
      EXPECT_EQ(b->device(), Device::Cpu());
      EXPECT_EQ(b->category(), MemCategory::kActivation);
      std::memset(b->data(), 0x5a, static_cast<size_t>(bytes));
      const uint8_t* p = b->as<uint8_t>();
      EXPECT_EQ(p[0], 0x5a);
      EXPECT_EQ(p[bytes - 1], 0x5a);
      EXPECT_EQ(t.current(MemCategory::kActivation), bytes);  // not rounded up
      EXPECT_EQ(Total(t), bytes);
    }
    EXPECT_EQ(t.current(MemCategory::kActivation), 0);
    EXPECT_EQ(t.peak(MemCategory::kActivation), bytes);
    EXPECT_EQ(Total(t), 0);
  }
}

TEST(BufferTest, ResetFreesOnceAndIsIdempotent) {
  MemoryTracker t;
  absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Cpu(), 256, MemCategory::kGrad, &t);
  ASSERT_TRUE(b.ok()) << b.status();
  b->Reset();
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_EQ(b->bytes(), 0);
  EXPECT_EQ(t.current(MemCategory::kGrad), 0);
  b->Reset();
  EXPECT_EQ(t.current(MemCategory::kGrad), 0);  // not negative
}

TEST(BufferTest, MoveTransfersOwnership) {
  MemoryTracker t;
  absl::StatusOr<Buffer> a = Buffer::Allocate(Device::Cpu(), 100, MemCategory::kParam, &t);
  ASSERT_TRUE(a.ok()) << a.status();
  void* const pa = a->data();
  {
    Buffer moved(std::move(*a));
    EXPECT_EQ(moved.data(), pa);
    EXPECT_EQ(moved.bytes(), 100);
    EXPECT_EQ(moved.category(), MemCategory::kParam);
    EXPECT_EQ(a->data(), nullptr);  // NOLINT(bugprone-use-after-move): checking it
    EXPECT_EQ(a->bytes(), 0);
    EXPECT_EQ(t.current(MemCategory::kParam), 100);

    absl::StatusOr<Buffer> c = Buffer::Allocate(Device::Cpu(), 200, MemCategory::kComm, &t);
    ASSERT_TRUE(c.ok()) << c.status();
    void* const pc = c->data();
    EXPECT_EQ(Total(t), 300);
    // Assigning over `moved` frees what it held and takes c's allocation.
    moved = std::move(*c);
    EXPECT_EQ(moved.data(), pc);
    EXPECT_EQ(moved.bytes(), 200);
    EXPECT_EQ(moved.category(), MemCategory::kComm);
    EXPECT_EQ(c->data(), nullptr);
    EXPECT_EQ(t.current(MemCategory::kParam), 0);
    EXPECT_EQ(t.current(MemCategory::kComm), 200);
    EXPECT_EQ(Total(t), 200);

    // Into a default-constructed buffer.
    Buffer empty;
    EXPECT_EQ(empty.data(), nullptr);
    empty = std::move(moved);
    EXPECT_EQ(empty.data(), pc);
    EXPECT_EQ(t.current(MemCategory::kComm), 200);
  }
  // Everything was freed exactly once.
  EXPECT_EQ(t.current(MemCategory::kParam), 0);
  EXPECT_EQ(t.current(MemCategory::kComm), 0);
  EXPECT_EQ(Total(t), 0);
  // The moved-from originals are destroyed here and must record nothing.
}

TEST(BufferTest, MovedFromBuffersRecordNothingOnDestruction) {
  MemoryTracker t;
  {
    absl::StatusOr<Buffer> a = Buffer::Allocate(Device::Cpu(), 64, MemCategory::kMaster, &t);
    ASSERT_TRUE(a.ok());
    std::vector<Buffer> v;
    v.push_back(std::move(*a));
    v.reserve(16);  // relocates by move
    EXPECT_EQ(t.current(MemCategory::kMaster), 64);
  }
  EXPECT_EQ(t.current(MemCategory::kMaster), 0);
  EXPECT_EQ(Total(t), 0);
}

TEST(BufferTest, ZeroBytes) {
  MemoryTracker t;
  {
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Cpu(), 0, MemCategory::kGrad, &t);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->bytes(), 0);
    EXPECT_EQ(t.current(MemCategory::kGrad), 0);
  }
  EXPECT_EQ(t.current(MemCategory::kGrad), 0);
  EXPECT_EQ(Total(t), 0);
}

TEST(BufferTest, NegativeSizeIsInvalidArgument) {
  MemoryTracker t;
  absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Cpu(), -12345, MemCategory::kParam, &t);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("-12345"));
  EXPECT_EQ(Total(t), 0);
  EXPECT_EQ(t.snapshot().total_peak, 0);
}

TEST(BufferTest, NullTrackerRecordsNothing) {
  absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Cpu(), 1000, MemCategory::kParam, nullptr);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_NE(b->data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 64, 0u);
  std::memset(b->data(), 1, 1000);
  Buffer other = std::move(*b);
  EXPECT_EQ(other.bytes(), 1000);
  other.Reset();
  EXPECT_EQ(other.data(), nullptr);
}

// ---------------------------------------------------------------------------
// Meta and cuda devices

TEST(BufferTest, MetaAllocatesNothingButIsRecorded) {
  MemoryTracker t;
  const int64_t kBytes = 7500000000;  // 7.5e9: more than this test could hold
  {
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Meta(), kBytes, MemCategory::kOptim, &t);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(b->data(), nullptr);
    EXPECT_EQ(b->bytes(), kBytes);
    EXPECT_EQ(b->device(), Device::Meta());
    EXPECT_EQ(t.current(MemCategory::kOptim), kBytes);
    EXPECT_EQ(t.peak(MemCategory::kOptim), kBytes);

    absl::StatusOr<Buffer> small = Buffer::Allocate(Device::Meta(), 3, MemCategory::kOptim, &t);
    ASSERT_TRUE(small.ok()) << small.status();
    EXPECT_EQ(t.current(MemCategory::kOptim), kBytes + 3);  // exact, like cpu
  }
  EXPECT_EQ(t.current(MemCategory::kOptim), 0);
  EXPECT_EQ(t.peak(MemCategory::kOptim), kBytes + 3);
  EXPECT_EQ(Total(t), 0);
}

TEST(DeviceTest, ToStringAndEquality) {
  EXPECT_EQ(Device::Cpu().ToString(), "cpu");
  EXPECT_EQ(Device::CpuAsync().ToString(), "cpu_async");
  EXPECT_EQ(Device::Meta().ToString(), "meta");
  EXPECT_EQ(Device::Cuda(1).ToString(), "cuda:1");
  EXPECT_EQ(Device::Cuda(2), Device::Cuda(2));
  EXPECT_FALSE(Device::Cuda(0) == Device::Cuda(1));
  EXPECT_FALSE(Device::Cpu() == Device::Meta());
  EXPECT_NE(Device::Cpu(), Device::CpuAsync());
  EXPECT_EQ(Device::CpuAsync().kind, DeviceKind::kCpuAsync);
  EXPECT_EQ(Device::CpuAsync().index, 0);
}

TEST(DeviceTest, ParseDeviceInvertsToString) {
  for (Device d : {Device::Cpu(), Device::CpuAsync(), Device::Meta(), Device::Cuda(0),
                   Device::Cuda(3), Device::Cuda(12)}) {
    SCOPED_TRACE(d.ToString());
    absl::StatusOr<Device> parsed = ParseDevice(d.ToString());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
}

TEST(DeviceTest, ParseDeviceCudaAloneIsCudaZero) {
  absl::StatusOr<Device> d = ParseDevice("cuda");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, Device::Cuda(0));
}

TEST(DeviceTest, ParseDeviceErrorsNameTheTextAndTheChoices) {
  for (const char* text :
       {"", "gpu", "CPU", "cpu_sync", "cuda:", "cuda:-1", "cuda:x", "cuda:1x", "cuda1", " cpu"}) {
    SCOPED_TRACE(text);
    absl::StatusOr<Device> d = ParseDevice(text);
    ASSERT_FALSE(d.ok()) << "parsed as " << d->ToString();
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(d.status().message());
    EXPECT_THAT(msg, HasSubstr(absl::StrCat("'", text, "'")));
    EXPECT_THAT(msg, HasSubstr("cpu_async"));
    EXPECT_THAT(msg, HasSubstr("meta"));
  }
}

TEST(DeviceTest, HostAccessibleAndAsynchronous) {
  EXPECT_TRUE(Device::Cpu().host_accessible());
  EXPECT_TRUE(Device::CpuAsync().host_accessible());
  EXPECT_FALSE(Device::Meta().host_accessible());
  EXPECT_FALSE(Device::Cuda(0).host_accessible());

  EXPECT_FALSE(Device::Cpu().asynchronous());
  EXPECT_TRUE(Device::CpuAsync().asynchronous());
  EXPECT_FALSE(Device::Meta().asynchronous());
  EXPECT_TRUE(Device::Cuda(1).asynchronous());
}

// TRIREME_TEST_CUDA_BUILD comes from the BUILD file: set under --config=cuda.
TEST(DeviceTest, BuiltWithCudaMatchesTheBuild) {
#ifdef TRIREME_TEST_CUDA_BUILD
  EXPECT_TRUE(BuiltWithCuda());
#else
  EXPECT_FALSE(BuiltWithCuda());
  absl::StatusOr<int> n = CudaDeviceCount();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
#endif
}

// Without --config=cuda, or with it on a machine without a device: an error,
// not a crash, and nothing recorded.
TEST(BufferTest, CudaWithoutDeviceIsUnavailable) {
  absl::StatusOr<int> n = CudaDeviceCount();
  ASSERT_TRUE(n.ok()) << n.status();
  if (*n > 0) GTEST_SKIP() << "this machine has a CUDA device";

  MemoryTracker t;
  absl::StatusOr<Buffer> b = Buffer::Allocate(Device::Cuda(0), 1024, MemCategory::kParam, &t);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable) << b.status();
  if (!BuiltWithCuda()) {
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("cuda:0"));
  }
  const MemoryTracker::Snapshot s = t.snapshot();
  EXPECT_EQ(s.current[static_cast<int>(MemCategory::kParam)], 0);
  EXPECT_EQ(s.peak[static_cast<int>(MemCategory::kParam)], 0);
  EXPECT_EQ(s.total_current, 0);
  EXPECT_EQ(s.total_peak, 0);
}

TEST(FormatBytesTest, Units) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(int64_t{5} << 20), "5.00 MiB");
  EXPECT_EQ(FormatBytes(int64_t{2} << 30), "2.00 GiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(FormatBytes(int64_t{1} << 40), "1024.00 GiB");
  EXPECT_EQ(FormatBytes(-512), "-512 B");
}

}  // namespace
}  // namespace trireme

namespace trireme {
namespace {

// Staging memory: page-locked where a GPU is usable, aligned host memory
// here; either way a vector over it holds its values and frees cleanly.
TEST(PinnedVectorTest, HoldsValuesInAlignedMemory) {
  PinnedVector<float> v(1000, 0.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 64, 0u);
  for (size_t i = 0; i < v.size(); ++i) v[i] += static_cast<float>(i);
  v.resize(5000, 2.0f);  // reallocates through the allocator
  EXPECT_EQ(v[999], 999.5f);
  EXPECT_EQ(v[4999], 2.0f);
  EXPECT_EQ(AllocateStagingHost(0), nullptr);
  FreeStagingHost(nullptr);
}

TEST(HostMemoryTest, ReadsTheKernelsFigures) {
  absl::StatusOr<HostMemory> m = ReadHostMemory();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT(m->mem_available, 0);
  EXPECT_GT(m->available(), 0);
  EXPECT_LE(m->available(), m->mem_available);
  if (m->cgroup_limit >= 0) {
    EXPECT_LE(m->available(), m->cgroup_limit - m->cgroup_used);
    EXPECT_FALSE(m->cgroup.empty());
  }
  EXPECT_THAT(m->ToString(), ::testing::HasSubstr("MemAvailable"));
  HostMemory limited = *m;
  limited.cgroup_limit = limited.cgroup_used + 1024;
  limited.cgroup = "/sys/fs/cgroup/test";
  EXPECT_EQ(limited.available(), std::min<int64_t>(1024, m->mem_available));
  EXPECT_THAT(limited.ToString(), ::testing::HasSubstr("cgroup /sys/fs/cgroup/test limit"));
}

TEST(HostMemoryTest, ResidentBytesFollowTouchedMemory) {
  const int64_t before = ResidentBytes();
  ASSERT_GT(before, 0);
  constexpr int64_t kBytes = 64 << 20;
  std::vector<char> v(kBytes);
  std::memset(v.data(), 1, v.size());  // every page resident
  const int64_t after = ResidentBytes();
  EXPECT_GE(after - before, kBytes * 9 / 10) << before << " -> " << after;
  EXPECT_GE(PeakResidentBytes(), after);
  EXPECT_EQ(v[kBytes - 1], 1);
}

}  // namespace
}  // namespace trireme
