// Tests for runtime/core/status.h: RETURN_IF_ERROR, ASSIGN_OR_RETURN, Annotate.
#include "runtime/core/status.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace trireme {
namespace {

// Runs RETURN_IF_ERROR on `s`, then records that the rest of the function ran.
absl::Status ReturnIfErrorHelper(absl::Status s, std::vector<std::string>* trace) {
  trace->push_back("before");
  RETURN_IF_ERROR(s);
  trace->push_back("after");
  return absl::OkStatus();
}

absl::Status CountingStatus(int* calls, absl::Status s) {
  ++*calls;
  return s;
}

TEST(ReturnIfErrorTest, OkContinues) {
  std::vector<std::string> trace;
  EXPECT_TRUE(ReturnIfErrorHelper(absl::OkStatus(), &trace).ok());
  EXPECT_EQ(trace, (std::vector<std::string>{"before", "after"}));
}

TEST(ReturnIfErrorTest, ErrorReturnsItAndSkipsTheRest) {
  std::vector<std::string> trace;
  const absl::Status s = ReturnIfErrorHelper(absl::NotFoundError("no such shard"), &trace);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such shard");
  EXPECT_EQ(trace, (std::vector<std::string>{"before"}));
}

TEST(ReturnIfErrorTest, EvaluatesTheExpressionOnce) {
  int calls = 0;
  auto f = [&calls]() -> absl::Status {
    RETURN_IF_ERROR(CountingStatus(&calls, absl::OkStatus()));
    RETURN_IF_ERROR(CountingStatus(&calls, absl::InternalError("x")));
    RETURN_IF_ERROR(CountingStatus(&calls, absl::OkStatus()));
    return absl::OkStatus();
  };
  EXPECT_EQ(f().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(calls, 2);
}

TEST(ReturnIfErrorTest, WorksAsASingleStatementUnderIf) {
  auto f = [](bool check, absl::Status s) -> absl::Status {
    // No braces on purpose: the macro must be a single statement, or the else
    // would not compile / would bind to the macro's own if.
    if (check)
      RETURN_IF_ERROR(s);
    else
      return absl::CancelledError("unchecked");
    return absl::OkStatus();
  };
  EXPECT_EQ(f(true, absl::AbortedError("a")).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(f(true, absl::OkStatus()).ok());
  EXPECT_EQ(f(false, absl::OkStatus()).code(), absl::StatusCode::kCancelled);
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

// Halves `x` twice through ASSIGN_OR_RETURN into a declaration and into an
// existing variable; `reached` records how far it got.
absl::StatusOr<int> Quarter(int x, int* reached) {
  *reached = 0;
  ASSIGN_OR_RETURN(int h, Half(x));
  *reached = 1;
  int q = -1;
  ASSIGN_OR_RETURN(q, Half(h));
  *reached = 2;
  return q;
}

TEST(AssignOrReturnTest, AssignsOnSuccess) {
  int reached = -1;
  absl::StatusOr<int> r = Quarter(12, &reached);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 3);
  EXPECT_EQ(reached, 2);
}

TEST(AssignOrReturnTest, ReturnsTheStatusOnFailure) {
  int reached = -1;
  absl::StatusOr<int> r = Quarter(7, &reached);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "odd");
  EXPECT_EQ(reached, 0);

  r = Quarter(6, &reached);  // 6 -> 3 -> odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "odd");
  EXPECT_EQ(reached, 1);
}

absl::StatusOr<std::unique_ptr<std::string>> MakeName(bool ok) {
  if (!ok) return absl::ResourceExhaustedError("out of names");
  return std::make_unique<std::string>("trireme");
}

// ASSIGN_OR_RETURN into a Status-returning function, with a move-only value.
absl::Status UseName(bool ok, std::string* out) {
  ASSIGN_OR_RETURN(std::unique_ptr<std::string> name, MakeName(ok));
  *out = *name;
  return absl::OkStatus();
}

TEST(AssignOrReturnTest, MoveOnlyValuesAndStatusReturn) {
  std::string out = "unset";
  EXPECT_TRUE(UseName(true, &out).ok());
  EXPECT_EQ(out, "trireme");

  out = "unset";
  const absl::Status s = UseName(false, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "out of names");
  EXPECT_EQ(out, "unset");
}

TEST(AnnotateTest, KeepsCodeAndPrefixesMessage) {
  const absl::Status s = Annotate(absl::UnavailableError("peer 3 is gone"), "all_reduce");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "all_reduce: peer 3 is gone");

  const absl::Status twice = Annotate(s, "step 12");
  EXPECT_EQ(twice.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(twice.message(), "step 12: all_reduce: peer 3 is gone");
}

TEST(AnnotateTest, OkStaysOk) {
  const absl::Status s = Annotate(absl::OkStatus(), "context");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kOk);
  EXPECT_TRUE(s.message().empty());
}

}  // namespace
}  // namespace trireme
