// The CUDA data mover (--config=cuda): the threads backend's copies and
// reductions on GPU memory, on a stream of the mover's own.
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/comm/cuda_reduce.h"
#include "runtime/comm/internal/data_mover.h"
#include "runtime/core/cuda_status.h"

namespace trireme::internal {
namespace {

class CudaDataMover final : public DataMover {
 public:
  static absl::StatusOr<std::unique_ptr<DataMover>> Create(int device) {
    CudaDeviceScope scope(device);
    RETURN_IF_ERROR(scope.status());
    cudaStream_t s = nullptr;
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    auto mover = std::unique_ptr<CudaDataMover>(new CudaDataMover(device, s));
    // Ranks that share the node's GPUs read each other's memory: turn on
    // peer access wherever the hardware allows it (Reduce checks the rest).
    int n = 0;
    CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&n));
    mover->peer_.assign(n, false);
    for (int d = 0; d < n; ++d) {
      int can = d == device ? 1 : 0;
      if (d != device) CUDA_RETURN_IF_ERROR(cudaDeviceCanAccessPeer(&can, device, d));
      if (can && d != device) {
        const cudaError_t err = cudaDeviceEnablePeerAccess(d, 0);
        if (err == cudaErrorPeerAccessAlreadyEnabled) {
          cudaGetLastError();  // not an error here; clear it
        } else {
          CUDA_RETURN_IF_ERROR(err);
        }
      }
      mover->peer_[d] = can != 0;
    }
    return std::unique_ptr<DataMover>(std::move(mover));
  }
  ~CudaDataMover() override {
    CudaDeviceScope scope(device_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }

  absl::Status Copy(void* dst, const void* src, int64_t bytes) override {
    if (bytes <= 0 || dst == src) return absl::OkStatus();
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
    return absl::OkStatus();
  }
  absl::Status ToHost(void* host, const void* src, int64_t bytes) override {
    if (bytes <= 0) return absl::OkStatus();
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status FromHost(void* dst, const void* host, int64_t bytes) override {
    if (bytes <= 0) return absl::OkStatus();
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  absl::Status Reduce(DType dtype, ReduceOp op, const std::vector<const void*>& ins, int64_t begin,
                      int64_t end, void* out) override {
    if (end <= begin) return absl::OkStatus();
    if (ins.size() == 1) {  // a group of one: the reduction is the input, bit for bit
      const int64_t esize = DTypeSize(dtype);
      return Copy(out, static_cast<const char*>(ins[0]) + begin * esize, (end - begin) * esize);
    }
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    for (const void* in : ins) RETURN_IF_ERROR(CheckReachable(in));
    return ReduceRanksCuda(dtype, op, ins.data(), static_cast<int>(ins.size()), begin, end, out,
                           stream_);
  }
  absl::Status Finish() override {
    CudaDeviceScope scope(device_);
    RETURN_IF_ERROR(scope.status());
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  CudaDataMover(int device, cudaStream_t s) : device_(device), stream_(s) {}

  // A reduction kernel on this device reads every input: each must be memory
  // of this device, of a peer it can access, or host memory it can map.
  absl::Status CheckReachable(const void* p) const {
    cudaPointerAttributes a;
    CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&a, p));
    if (a.type != cudaMemoryTypeDevice || a.device == device_) return absl::OkStatus();
    if (a.device >= 0 && a.device < static_cast<int>(peer_.size()) && peer_[a.device]) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "a threads-backend reduction on cuda:", device_, " reads a buffer on cuda:", a.device,
        ", which this GPU cannot access (no peer access between them); use the nccl backend, "
        "or put the group's ranks on GPUs with peer access"));
  }

  const int device_;
  cudaStream_t stream_;
  std::vector<bool> peer_;  // peer_[d]: this device can read cuda:d's memory
};

}  // namespace

absl::StatusOr<Device> DeviceOfPointer(const void* p) {
  if (p == nullptr) return Device::Cpu();
  cudaPointerAttributes a;
  const cudaError_t err = cudaPointerGetAttributes(&a, p);
  if (err != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: then it is host memory
    int driver = 0;
    if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice ||
        cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
      return Device::Cpu();
    }
    return CudaToStatus(err, "cudaPointerGetAttributes", __FILE__, __LINE__);
  }
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) {
    return Device::Cuda(a.device);
  }
  return Device::Cpu();
}

absl::StatusOr<std::unique_ptr<DataMover>> NewCudaDataMover(int device) {
  return CudaDataMover::Create(device);
}

}  // namespace trireme::internal
