// GPU test: the threads backend on CUDA memory (one GPU, many ranks). Four
// thread ranks whose data communicator is on cuda:0 run every collective and
// a point-to-point ring on device buffers; the results must be bitwise those
// of the same calls on host buffers (the reduction kernel runs the host
// loop's arithmetic, in rank order). Uneven counts; f32 and bf16. Fails,
// naming the missing device or driver, without a GPU (Bazel runs it only
// where it found one).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme {
namespace {

constexpr int kRanks = 4;
constexpr int64_t kCount = 250001 * kRanks;  // reduce-scatter chunks of 250001

// What every rank ends with, one host byte vector per result.
using Results = std::vector<std::vector<std::vector<char>>>;  // [rank][result]

float Value(int rank, int64_t i) {
  return 0.001f * static_cast<float>((i * 7919 + rank * 104729) % 20011 - 10005);
}

// A buffer on `device` holding `host`'s bytes (or zeros).
absl::StatusOr<Buffer> Put(const Device& device, const void* host, int64_t bytes,
                           MemoryTracker* tracker) {
  ASSIGN_OR_RETURN(Buffer b, Buffer::Allocate(device, bytes, MemCategory::kComm, tracker));
  if (device.kind == DeviceKind::kCuda) {
    RETURN_IF_ERROR(testing::CudaCall(cudaMemcpy(b.data(), host, bytes, cudaMemcpyHostToDevice),
                                      "cudaMemcpy to the device", bytes));
    // Landed before the communicator's own (non-blocking) stream reads it.
    RETURN_IF_ERROR(testing::CudaCall(cudaDeviceSynchronize(), "cudaDeviceSynchronize", 0));
  } else {
    std::memcpy(b.data(), host, bytes);
  }
  return b;
}

absl::Status Get(const Device& device, const Buffer& b, std::vector<char>* out) {
  out->resize(b.bytes());
  if (device.kind != DeviceKind::kCuda) {
    std::memcpy(out->data(), b.data(), b.bytes());
    return absl::OkStatus();
  }
  return testing::CudaCall(cudaMemcpy(out->data(), b.data(), b.bytes(), cudaMemcpyDeviceToHost),
                           "cudaMemcpy to the host", b.bytes());
}

// Runs the collectives on `device` and returns every rank's results.
absl::StatusOr<Results> RunAll(const Device& device) {
  Results results(kRanks);
  absl::Status st = RunOnRanks(kRanks, [&](Communicator& world) -> absl::Status {
    world.SetDataDevice(device);
    const int r = world.rank();
    MemoryTracker tracker;
    std::vector<float> x(kCount);
    for (int64_t i = 0; i < kCount; ++i) x[i] = Value(r, i);
    std::vector<BF16> h(kCount);
    for (int64_t i = 0; i < kCount; ++i) h[i] = F32ToBF16(x[i]);
    const int64_t fbytes = kCount * 4, hbytes = kCount * 2;
    std::vector<float> zeros(kCount, 0.0f);
    ASSIGN_OR_RETURN(Buffer in, Put(device, x.data(), fbytes, &tracker));
    ASSIGN_OR_RETURN(Buffer sum, Put(device, zeros.data(), fbytes, &tracker));
    ASSIGN_OR_RETURN(Buffer half, Put(device, h.data(), hbytes, &tracker));
    ASSIGN_OR_RETURN(Buffer chunk, Put(device, zeros.data(), fbytes / kRanks, &tracker));
    ASSIGN_OR_RETURN(Buffer gathered, Put(device, zeros.data(), fbytes * kRanks, &tracker));
    ASSIGN_OR_RETURN(Buffer bcast, Put(device, x.data(), fbytes, &tracker));
    ASSIGN_OR_RETURN(Buffer ring, Put(device, zeros.data(), fbytes, &tracker));
    const MutView vin{in.data(), kCount, DType::kF32};
    RETURN_IF_ERROR(world.AllReduce(vin, MutView{sum.data(), kCount, DType::kF32}, ReduceOp::kSum));
    const MutView vhalf{half.data(), kCount, DType::kBF16};
    RETURN_IF_ERROR(world.AllReduce(vhalf, vhalf, ReduceOp::kAvg));  // in place
    RETURN_IF_ERROR(world.ReduceScatter(vin, MutView{chunk.data(), kCount / kRanks, DType::kF32},
                                        ReduceOp::kMax));
    RETURN_IF_ERROR(world.AllGather(vin, MutView{gathered.data(), kCount * kRanks, DType::kF32}));
    RETURN_IF_ERROR(world.Broadcast(MutView{bcast.data(), kCount, DType::kF32}, 2));
    Work w = world.P2PGroupAsync(
        {P2POp::Send(vin, (r + 1) % kRanks),
         P2POp::Recv(MutView{ring.data(), kCount, DType::kF32}, (r + kRanks - 1) % kRanks)});
    RETURN_IF_ERROR(w.Wait());
    std::vector<std::vector<char>>& out = results[r];
    out.resize(6);
    int k = 0;
    for (const Buffer* b : {&sum, &half, &chunk, &gathered, &bcast, &ring}) {
      RETURN_IF_ERROR(Get(device, *b, &out[k++]));
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return results;
}

TEST(ThreadsCudaComm, DeviceBuffersGiveTheHostBits) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  ASSERT_OK_AND_ASSIGN(Results host, RunAll(Device::Cpu()));
  ASSERT_OK_AND_ASSIGN(Results gpu, RunAll(Device::Cuda(0)));
  const char* names[] = {"all-reduce sum (f32)",     "all-reduce avg in place (bf16)",
                         "reduce-scatter max (f32)", "all-gather",
                         "broadcast from rank 2",    "send/recv ring"};
  for (int r = 0; r < kRanks; ++r) {
    for (int k = 0; k < 6; ++k) {
      ASSERT_EQ(gpu[r][k].size(), host[r][k].size());
      EXPECT_EQ(std::memcmp(gpu[r][k].data(), host[r][k].data(), host[r][k].size()), 0)
          << names[k] << " differs from the host result on rank " << r;
    }
  }
  // The host side did compute something: rank 1's ring holds rank 0's input.
  std::vector<float> ring(kCount);
  std::memcpy(ring.data(), host[1][5].data(), kCount * 4);
  EXPECT_EQ(ring[12345], Value(0, 12345));
}

// A data communicator on a GPU refuses host memory, naming the buffer.
TEST(ThreadsCudaComm, HostMemoryIsRefusedOnACudaDataCommunicator) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  absl::Status st = RunOnRanks(2, [&](Communicator& world) -> absl::Status {
    world.SetDataDevice(Device::Cuda(0));
    std::vector<float> host(16, 1.0f);
    const absl::Status s = world.AllReduce(MutView{host.data(), 16, DType::kF32},
                                           MutView{host.data(), 16, DType::kF32}, ReduceOp::kSum);
    if (s.code() != absl::StatusCode::kInvalidArgument) {
      return absl::InternalError(absl::StrCat("expected InvalidArgument, got ", s.ToString()));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme
