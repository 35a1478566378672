// GPU test: the nccl backend on the one GPU a single-GPU machine has (NCCL
// puts one rank per GPU, so the group has one rank; the multi-rank paths run
// under mpirun on several GPUs). Bootstrapped over a threads world of one:
// creation, every collective on device memory (bf16 reduced in f32 and
// rounded once, averages divided after the sum), a split with its control
// group, the desync check's round trip over the control group, and an
// invalid device refused on every rank. Fails, naming the missing device or
// driver, without a GPU.
#include "runtime/comm/nccl_comm.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/comm/cuda_reduce.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "tests/gpu/gpu_test_util.h"

namespace trireme {
namespace {

using testing::DeviceArray;

TEST(NcclComm, OneRankGroupOnTheGpu) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  CommOptions o;
  o.check_desync = true;  // every op's fingerprint over the control group
  absl::Status st = RunOnRanks(
      1,
      [&](Communicator& control) -> absl::Status {
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> nccl, CreateNcclCommunicator(control, 0, o));
        if (std::string(nccl->backend()) != "nccl" || nccl->size() != 1) {
          return absl::InternalError("not a one-rank nccl group");
        }
        const int64_t n = 1000003;
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) x[i] = 0.001f * static_cast<float>(i % 2001 - 1000);
        ASSIGN_OR_RETURN(DeviceArray<float> in, DeviceArray<float>::From(x));
        ASSIGN_OR_RETURN(DeviceArray<float> out, DeviceArray<float>::Allocate(n));
        // A group of one: every reduction is its input.
        RETURN_IF_ERROR(nccl->AllReduce(ConstView{in.get(), n, DType::kF32},
                                        MutView{out.get(), n, DType::kF32}, ReduceOp::kAvg));
        ASSIGN_OR_RETURN(std::vector<float> got, out.ToHost());
        if (got != x) return absl::InternalError("f32 all-reduce (avg) of one rank changed values");
        std::vector<BF16> h(n);
        for (int64_t i = 0; i < n; ++i) h[i] = F32ToBF16(x[i]);
        ASSIGN_OR_RETURN(DeviceArray<BF16> hb, DeviceArray<BF16>::From(h));
        RETURN_IF_ERROR(nccl->AllReduce(ConstView{hb.get(), n, DType::kBF16},
                                        MutView{hb.get(), n, DType::kBF16}, ReduceOp::kSum));
        ASSIGN_OR_RETURN(std::vector<BF16> hgot, hb.ToHost());
        if (std::memcmp(hgot.data(), h.data(), n * 2) != 0) {
          return absl::InternalError("bf16 all-reduce through f32 changed values");
        }
        RETURN_IF_ERROR(nccl->ReduceScatter(ConstView{in.get(), n, DType::kF32},
                                            MutView{out.get(), n, DType::kF32}, ReduceOp::kMax));
        RETURN_IF_ERROR(nccl->AllGather(ConstView{in.get(), n, DType::kF32},
                                        MutView{out.get(), n, DType::kF32}));
        RETURN_IF_ERROR(nccl->Broadcast(MutView{out.get(), n, DType::kF32}, 0));
        RETURN_IF_ERROR(nccl->Barrier());
        ASSIGN_OR_RETURN(got, out.ToHost());
        if (got != x) return absl::InternalError("gather/broadcast of one rank changed values");
        // A split (with its control group alongside) works like its parent.
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> child, nccl->Split(0, 0, "child"));
        if (child == nullptr || child->size() != 1) return absl::InternalError("split failed");
        RETURN_IF_ERROR(child->AllReduce(ConstView{in.get(), n, DType::kF32},
                                         MutView{out.get(), n, DType::kF32}, ReduceOp::kSum));
        return absl::OkStatus();
      },
      o);
  EXPECT_TRUE(st.ok()) << st;
}

// The arithmetic around NCCL's f32 sums (a one-rank group cannot show it):
// widening bf16 to f32, and finishing an f32 sum of 4 ranks as an average
// rounded to bf16 once -- the host loop's FinishF32 and rounding, bit for bit.
TEST(NcclComm, WideningAndFinishingMatchTheHostLoop) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  const int64_t n = 65537;
  std::vector<float> sums(n);
  for (int64_t i = 0; i < n; ++i) sums[i] = 0.37f * static_cast<float>(i % 1013 - 506);
  std::vector<BF16> want(n), as_bf16(n);
  std::vector<float> widened(n);
  for (int64_t i = 0; i < n; ++i) {
    want[i] = F32ToBF16(FinishF32(sums[i], ReduceOp::kAvg, 4));
    as_bf16[i] = F32ToBF16(sums[i]);
    widened[i] = BF16ToF32(as_bf16[i]);
  }
  ASSERT_OK_AND_ASSIGN(DeviceArray<float> in, DeviceArray<float>::From(sums));
  ASSERT_OK_AND_ASSIGN(DeviceArray<BF16> out, DeviceArray<BF16>::Allocate(n));
  ASSERT_OK(
      ConvertCuda(in.get(), DType::kF32, out.get(), DType::kBF16, n, ReduceOp::kAvg, 4, nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<BF16> got, out.ToHost());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), n * 2), 0) << "average of 4, rounded to bf16";
  ASSERT_OK_AND_ASSIGN(DeviceArray<BF16> h, DeviceArray<BF16>::From(as_bf16));
  ASSERT_OK_AND_ASSIGN(DeviceArray<float> w, DeviceArray<float>::Allocate(n));
  ASSERT_OK(
      ConvertCuda(h.get(), DType::kBF16, w.get(), DType::kF32, n, ReduceOp::kSum, 1, nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<float> wgot, w.ToHost());
  EXPECT_EQ(wgot, widened) << "bf16 widened to f32";
}

// A GPU that does not exist is refused on every rank, named.
TEST(NcclComm, MissingDeviceIsRefused) {
  TRIREME_REQUIRE_CUDA_DEVICE();
  absl::Status st = RunOnRanks(1, [&](Communicator& control) -> absl::Status {
    auto nccl = CreateNcclCommunicator(control, 4096, CommOptions{});
    if (nccl.ok()) return absl::InternalError("cuda:4096 accepted");
    if (std::string(nccl.status().message()).find("4096") == std::string::npos) {
      return absl::InternalError(
          absl::StrCat("the error does not name the device: ", nccl.status().ToString()));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

}  // namespace
}  // namespace trireme
