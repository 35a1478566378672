// Status helpers shared by the whole runtime.
//
// Everything that can fail because of the outside world (configuration, I/O,
// communication, CUDA, allocation) returns absl::Status or absl::StatusOr<T>.
// Library code never calls exit() and never lets an exception cross its boundary.
#ifndef TRIREME_RUNTIME_CORE_STATUS_H_
#define TRIREME_RUNTIME_CORE_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TRIREME_CONCAT_INNER_(a, b) a##b
#define TRIREME_CONCAT_(a, b) TRIREME_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if
// it is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status trireme_status_ = (expr);           \
    if (!trireme_status_.ok()) return trireme_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` evaluates an absl::StatusOr<T>; on error
// returns its status, otherwise move-assigns the value to `lhs`.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  TRIREME_ASSIGN_OR_RETURN_IMPL_(TRIREME_CONCAT_(trireme_or_, __LINE__), lhs, rexpr)

#define TRIREME_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                   \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

namespace trireme {

// Adds context in front of an error's message, keeping its code. OK stays OK.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_STATUS_H_
