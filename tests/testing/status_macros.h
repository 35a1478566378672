// Status assertions for tests: a failed absl::Status / StatusOr ends the
// test (fatally), printing the status.
//   ASSERT_OK(DoThing());
//   ASSERT_OK_AND_ASSIGN(std::vector<float> v, ReadThing());
#ifndef TRIREME_TESTS_TESTING_STATUS_MACROS_H_
#define TRIREME_TESTS_TESTING_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

#define TRIREME_TEST_CONCAT_INNER(a, b) a##b
#define TRIREME_TEST_CONCAT(a, b) TRIREME_TEST_CONCAT_INNER(a, b)
#define TRIREME_TEST_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  ASSERT_TRUE(tmp.ok()) << tmp.status();         \
  lhs = std::move(*tmp)
// `lhs = *expr` for an absl::StatusOr, or a fatal failure printing its status.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  TRIREME_TEST_ASSIGN_IMPL(TRIREME_TEST_CONCAT(trireme_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK(expr)                                 \
  do {                                                  \
    const absl::Status trireme_status = (expr);         \
    ASSERT_TRUE(trireme_status.ok()) << trireme_status; \
  } while (0)

#endif  // TRIREME_TESTS_TESTING_STATUS_MACROS_H_
