#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cast.h"
#include "kernels/cast_body.h"

namespace trireme::kernels {

absl::Status CastCpu(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n) {
  if (!IsFloat(in_dtype) || !IsFloat(out_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("cast from ", DTypeName(in_dtype), " to ",
                                                   DTypeName(out_dtype),
                                                   ": only f32, bf16 and f16 are supported"));
  }
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cast of ", n, " elements"));
  if (in_dtype == out_dtype) {
    if (in != out && n > 0) std::memmove(out, in, n * DTypeSize(in_dtype));
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < n; ++i) CastElement(in, in_dtype, out, out_dtype, i);
  return absl::OkStatus();
}

}  // namespace trireme::kernels
