// What the GPU tests share (--config=cuda only): the device precondition, and
// device arrays whose allocation and copies are checked, so a CUDA failure is
// the test's failure, named, never a silent zero.
//
// A GPU test never skips itself. It runs only where Bazel found a device (or
// TRIREME_GPU=1 said there is one) or where tools/gpu_check.sh runs it on a
// GPU machine; a missing device or driver there is a failure that says which.
#ifndef TRIREME_TESTS_GPU_GPU_TEST_UTIL_H_
#define TRIREME_TESTS_GPU_GPU_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/core/device.h"
#include "tests/testing/status_macros.h"  // ASSERT_OK, ASSERT_OK_AND_ASSIGN

// Fails the current test (fatally) unless a CUDA device is usable, naming why:
// no driver, a driver too old, no device, or a build without --config=cuda.
#define TRIREME_REQUIRE_CUDA_DEVICE()                                                 \
  do {                                                                                \
    const absl::Status trireme_device_status = ::trireme::CudaDeviceAvailable();      \
    ASSERT_TRUE(trireme_device_status.ok())                                           \
        << "this GPU test needs a CUDA device: " << trireme_device_status.ToString(); \
  } while (0)

namespace trireme::testing {

inline absl::Status CudaCall(cudaError_t err, const char* what, int64_t bytes) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " (", bytes, " bytes): ", cudaGetErrorName(err),
                                          ": ", cudaGetErrorString(err)));
}

// n elements of T in device memory, freed on destruction. Copies synchronize.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(DeviceArray&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }

  // Uninitialised.
  static absl::StatusOr<DeviceArray> Allocate(int64_t n) {
    DeviceArray a;
    const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
    absl::Status s =
        CudaCall(cudaMalloc(reinterpret_cast<void**>(&a.p_), bytes), "cudaMalloc", bytes);
    if (!s.ok()) return s;
    a.n_ = n;
    return a;
  }
  static absl::StatusOr<DeviceArray> From(const std::vector<T>& host) {
    absl::StatusOr<DeviceArray> a = Allocate(static_cast<int64_t>(host.size()));
    if (!a.ok()) return a.status();
    absl::Status s = CudaCall(cudaMemcpy(a->p_, host.data(), a->bytes(), cudaMemcpyHostToDevice),
                              "cudaMemcpy to the device", a->bytes());
    // From pageable memory the copy may still be in flight when cudaMemcpy
    // returns; work on non-blocking streams is not ordered after it.
    if (s.ok()) s = CudaCall(cudaDeviceSynchronize(), "cudaDeviceSynchronize", 0);
    if (!s.ok()) return s;
    return a;
  }
  // Waits for the device, then copies everything back.
  absl::StatusOr<std::vector<T>> ToHost() const {
    std::vector<T> h(n_);
    absl::Status s = CudaCall(cudaDeviceSynchronize(), "cudaDeviceSynchronize", 0);
    if (!s.ok()) return s;
    s = CudaCall(cudaMemcpy(h.data(), p_, bytes(), cudaMemcpyDeviceToHost),
                 "cudaMemcpy to the host", bytes());
    if (!s.ok()) return s;
    return h;
  }
  // Elements [begin, begin + count) only (for arrays too large to copy back).
  absl::StatusOr<std::vector<T>> SliceToHost(int64_t begin, int64_t count) const {
    if (begin < 0 || count < 0 || begin + count > n_) {
      return absl::OutOfRangeError(
          absl::StrCat("slice [", begin, ", ", begin + count, ") of ", n_, " elements"));
    }
    std::vector<T> h(count);
    const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
    absl::Status s = CudaCall(cudaDeviceSynchronize(), "cudaDeviceSynchronize", 0);
    if (!s.ok()) return s;
    s = CudaCall(cudaMemcpy(h.data(), p_ + begin, bytes, cudaMemcpyDeviceToHost),
                 "cudaMemcpy to the host", bytes);
    if (!s.ok()) return s;
    return h;
  }
  // Every byte set to `byte` (0xff makes every float a NaN: an element a
  // kernel failed to write then shows).
  absl::Status Memset(int byte) {
    absl::Status s = CudaCall(cudaMemset(p_, byte, bytes()), "cudaMemset", bytes());
    return s.ok() ? CudaCall(cudaDeviceSynchronize(), "cudaDeviceSynchronize", 0) : s;
  }

  T* get() const { return p_; }
  int64_t size() const { return n_; }
  int64_t bytes() const { return n_ * static_cast<int64_t>(sizeof(T)); }

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
};

}  // namespace trireme::testing

#endif  // TRIREME_TESTS_GPU_GPU_TEST_UTIL_H_
