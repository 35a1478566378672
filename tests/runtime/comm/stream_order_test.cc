// Stream-ordered communication on the threads backend (communicator.h, "Stream
// order", "Point-to-point", data communicators): an op issued on a stream
// starts after the stream's earlier work and later work waits for it, without
// blocking the host on a CpuStream and blocking it on an InlineStream;
// P2PGroup exchanges under rendezvous, and the deadlock of the same exchange
// written as separate calls; data communicators rejecting host memory; the
// busy, blocked and stream-blocked time in CommStats.
//
// Ranks run as threads (RunOnRanks); GoogleTest assertions inside them are
// thread-safe, and a rank's function returns the status of its calls.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/threads_comm.h"
#include "runtime/core/allocator.h"
#include "runtime/core/device.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/core/stream.h"
#include "tests/runtime/core/gate.h"

namespace trireme {
namespace {

using ::trireme::testing::Gate;

using ::testing::AllOf;
using ::testing::HasSubstr;

CommOptions WithTimeout(absl::Duration timeout, bool rendezvous = false) {
  CommOptions o;
  o.timeout = timeout;
  o.p2p_rendezvous = rendezvous;
  return o;
}

// A stream task: sleeps, then copies `values` into `dst` (a kernel producing
// an op's input late).
HostStream::Task WriteLate(absl::Duration delay, std::vector<float> values, float* dst) {
  return [delay, values = std::move(values), dst] {
    absl::SleepFor(delay);
    std::copy(values.begin(), values.end(), dst);
    return absl::OkStatus();
  };
}

// A stream task: copies `src` into *seen (a kernel consuming an op's output).
HostStream::Task ReadInto(const std::vector<float>* src, std::vector<float>* seen) {
  return [src, seen] {
    *seen = *src;
    return absl::OkStatus();
  };
}

// ---- every op kind is stream-ordered on a CpuStream -------------------------------

// What one op does on each of 3 ranks, with closed-form results.
enum class OpKind { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kSendRecv, kP2PGroup };
constexpr int kWorld = 3;
constexpr int64_t kCount = 5;

struct Plan {
  std::vector<float> input;     // written by a stream task before the op
  std::vector<float> expected;  // the output, read by a stream task after it
};

Plan MakePlan(OpKind op, int rank) {
  const int prev = (rank + kWorld - 1) % kWorld;
  Plan p;
  auto fill = [](std::vector<float>& v, int64_t n, auto f) {
    v.resize(n);
    for (int64_t i = 0; i < n; ++i) v[i] = f(i);
  };
  switch (op) {
    case OpKind::kAllReduce:  // sum over ranks of (rank + 1) * (i + 1)
      fill(p.input, kCount, [&](int64_t i) { return (rank + 1.0f) * (i + 1); });
      fill(p.expected, kCount, [](int64_t i) { return 6.0f * (i + 1); });
      break;
    case OpKind::kAllGather:
      fill(p.input, kCount, [&](int64_t i) { return 100.0f * rank + i; });
      fill(p.expected, kWorld * kCount,
           [](int64_t i) { return 100.0f * (i / kCount) + i % kCount; });
      break;
    case OpKind::kReduceScatter:
      fill(p.input, kWorld * kCount, [&](int64_t i) { return (rank + 1.0f) * (i + 1); });
      fill(p.expected, kCount, [&](int64_t i) { return 6.0f * (rank * kCount + i + 1); });
      break;
    case OpKind::kBroadcast:  // from rank 1
      fill(p.input, kCount, [&](int64_t i) { return rank == 1 ? 100.0f + i : -1.0f; });
      fill(p.expected, kCount, [](int64_t i) { return 100.0f + i; });
      break;
    case OpKind::kSendRecv:  // a ring: send to the next rank, receive from the previous
    case OpKind::kP2PGroup:
      fill(p.input, kCount, [&](int64_t i) { return 10.0f * rank + i; });
      fill(p.expected, kCount, [&](int64_t i) { return 10.0f * prev + i; });
      break;
  }
  return p;
}

// Issues `op` on `stream`; returns the Work of its last call.
Work IssueOn(OpKind op, Communicator& c, std::vector<float>& in, std::vector<float>& out,
             Stream* stream) {
  const int next = (c.rank() + 1) % c.size();
  const int prev = (c.rank() + c.size() - 1) % c.size();
  switch (op) {
    case OpKind::kAllReduce:
      return c.AllReduceAsync(ViewOf(in), ViewOf(out), ReduceOp::kSum, stream);
    case OpKind::kAllGather:
      return c.AllGatherAsync(ViewOf(in), ViewOf(out), stream);
    case OpKind::kReduceScatter:
      return c.ReduceScatterAsync(ViewOf(in), ViewOf(out), ReduceOp::kSum, stream);
    case OpKind::kBroadcast: {  // in place in `in`, then copied to `out` on the stream
      Work w = c.BroadcastAsync(ViewOf(in), 1, stream);
      stream->host()->Enqueue([&in, &out] {
        out = in;
        return absl::OkStatus();
      });
      return w;
    }
    case OpKind::kSendRecv:
      c.SendAsync(ViewOf(in), next, stream);
      return c.RecvAsync(ViewOf(out), prev, stream);
    case OpKind::kP2PGroup:
      return c.P2PGroupAsync({P2POp::Send(ViewOf(in), next), P2POp::Recv(ViewOf(out), prev)},
                             stream);
  }
  return Work();
}

struct OpCase {
  const char* name;
  OpKind op;
  bool rendezvous = false;  // CommOptions::p2p_rendezvous
};

class StreamOrderedOpTest : public ::testing::TestWithParam<OpCase> {};

TEST_P(StreamOrderedOpTest, RunsAfterEarlierWorkAndBeforeLaterWork) {
  const OpKind op = GetParam().op;
  absl::Status s = RunOnRanks(
      kWorld,
      [op](Communicator& c) -> absl::Status {
        const Plan plan = MakePlan(op, c.rank());
        std::vector<float> in(plan.input.size(), 0.0f);
        std::vector<float> out(plan.expected.size(), 0.0f);
        std::vector<float> seen;
        CpuStream stream(absl::StrCat("compute", c.rank()));
        stream.Enqueue(WriteLate(absl::Milliseconds(30), plan.input, in.data()));
        Work w = IssueOn(op, c, in, out, &stream);
        stream.Enqueue(ReadInto(&out, &seen));
        RETURN_IF_ERROR(stream.Synchronize());
        RETURN_IF_ERROR(w.Wait());
        EXPECT_EQ(seen, plan.expected) << "rank " << c.rank();
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20), GetParam().rendezvous));
  EXPECT_TRUE(s.ok()) << s;
}

// SendRecv is eager: as separate calls around a ring, rendezvous sends would
// deadlock (see P2PGroupTest); the group form takes rendezvous.
INSTANTIATE_TEST_SUITE_P(Ops, StreamOrderedOpTest,
                         ::testing::Values(OpCase{"AllReduce", OpKind::kAllReduce},
                                           OpCase{"AllGather", OpKind::kAllGather},
                                           OpCase{"ReduceScatter", OpKind::kReduceScatter},
                                           OpCase{"Broadcast", OpKind::kBroadcast},
                                           OpCase{"SendRecv", OpKind::kSendRecv},
                                           OpCase{"P2PGroup", OpKind::kP2PGroup},
                                           OpCase{"P2PGroupRendezvous", OpKind::kP2PGroup, true}),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return std::string(info.param.name);
                         });

// ---- the host: runs ahead on a CpuStream, blocks on an InlineStream ----------------

TEST(StreamOrderTest, CpuStreamAllReduceDoesNotBlockTheHost) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(8, 0.0f);
        std::vector<float> seen;
        CpuStream stream("compute");
        // A kernel that takes 50 ms to write the input.
        stream.Enqueue(
            WriteLate(absl::Milliseconds(50), std::vector<float>(8, c.rank() + 1.0f), x.data()));
        const absl::Time start = absl::Now();
        Work w = c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum, &stream);
        const absl::Duration issue = absl::Now() - start;
        const bool done_at_return = w.Test();
        stream.Enqueue(ReadInto(&x, &seen));
        RETURN_IF_ERROR(stream.Synchronize());
        RETURN_IF_ERROR(w.Wait());
        EXPECT_LT(issue, absl::Milliseconds(20)) << "the host waited for the stream";
        EXPECT_FALSE(done_at_return);
        EXPECT_EQ(seen, std::vector<float>(8, 3.0f)) << "rank " << c.rank();
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(StreamOrderTest, InlineStreamAllReduceCompletesBeforeReturning) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(8, c.rank() + 1.0f);
        InlineStream stream("cpu");
        if (c.rank() == 1) absl::SleepFor(absl::Milliseconds(60));  // the late rank
        const absl::Time start = absl::Now();
        Work w = c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum, &stream);
        const absl::Duration call = absl::Now() - start;
        EXPECT_TRUE(w.Test());
        EXPECT_EQ(x, std::vector<float>(8, 3.0f)) << "rank " << c.rank();  // no Wait needed
        if (c.rank() == 0) {
          EXPECT_GE(call, absl::Milliseconds(40)) << "rank 0 returned before rank 1 joined";
        }
        RETURN_IF_ERROR(stream.Synchronize());
        return w.Wait();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

// An op waits for its stream at most the communicator's timeout; then it
// fails naming the stream.
TEST(StreamOrderTest, StreamThatNeverReachesTheCallTimesOut) {
  absl::Status s = RunOnRanks(
      1,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(4, 1.0f);
        CpuStream stream("stuck");
        Gate gate;
        stream.Enqueue(gate.BlockingTask());
        Work w = c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum, &stream);
        const absl::Status ws = w.Wait(absl::Seconds(10));
        gate.Open();
        const absl::Status ss = stream.Synchronize();
        EXPECT_EQ(ws.code(), absl::StatusCode::kDeadlineExceeded) << ws;
        EXPECT_THAT(
            std::string(ws.message()),
            AllOf(HasSubstr("AllReduce"), HasSubstr("stream 'stuck' did not reach the call")));
        EXPECT_EQ(ss.code(), absl::StatusCode::kDeadlineExceeded) << ss;  // and the stream's
        return absl::OkStatus();
      },
      WithTimeout(absl::Milliseconds(200)));
  EXPECT_TRUE(s.ok()) << s;
}

// An op that fails (here: a peer that never calls, so it times out) reports
// its error on the Work and as the stream's sticky error.
TEST(StreamOrderTest, FailedStreamOrderedOpIsTheStreamsError) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        if (c.rank() == 1) return absl::OkStatus();  // never joins
        std::vector<float> x(4, 1.0f);
        CpuStream stream("compute");
        Work w = c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum, &stream);
        const absl::Status ss = stream.Synchronize();
        const absl::Status ws = w.Wait();
        EXPECT_EQ(ws.code(), absl::StatusCode::kDeadlineExceeded) << ws;
        EXPECT_EQ(ss.code(), absl::StatusCode::kDeadlineExceeded) << ss;
        EXPECT_THAT(std::string(ss.message()), HasSubstr("AllReduce"));
        return absl::OkStatus();
      },
      WithTimeout(absl::Milliseconds(300)));
  EXPECT_TRUE(s.ok()) << s;
}

// A call rejected by validation queues nothing, but its error is also the
// stream's (work after it would read what the op never wrote), reported by
// events recorded after it and by Synchronize. On both host stream kinds.
TEST(StreamOrderTest, RejectedCallIsTheStreamsError) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(4, 1.0f), small(3);
        CpuStream async_stream("compute");
        InlineStream inline_stream("compute");
        for (HostStream* stream : std::vector<HostStream*>{&async_stream, &inline_stream}) {
          // recv must be size x send = 8 elements.
          Work w = c.AllGatherAsync(ViewOf(x), ViewOf(small), stream);
          std::unique_ptr<Event> after = stream->NewEvent();
          RETURN_IF_ERROR(stream->Record(after.get()));
          // An event recorded after the call carries the error too.
          EXPECT_EQ(after->Synchronize().code(), absl::StatusCode::kInvalidArgument);
          const absl::Status ss = stream->Synchronize();
          EXPECT_EQ(w.Wait().code(), absl::StatusCode::kInvalidArgument);
          EXPECT_EQ(ss.code(), absl::StatusCode::kInvalidArgument) << stream->name();
          EXPECT_THAT(std::string(ss.message()), HasSubstr("recv count 3"));
          EXPECT_TRUE(stream->Synchronize().ok());  // reported once
        }
        // Nothing was queued: the group still works, with matching numbers.
        std::vector<float> sum(4);
        RETURN_IF_ERROR(c.AllReduce(ViewOf(x), ViewOf(sum), ReduceOp::kSum));
        EXPECT_EQ(sum[0], 2.0f);
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(s.ok()) << s;
}

// ---- point-to-point under rendezvous ------------------------------------------------

// Rank r sends {10 r, 10 r + 1, ...} to the other rank.
std::vector<float> Message(int rank) {
  std::vector<float> m(6);
  std::iota(m.begin(), m.end(), 10.0f * rank);
  return m;
}

TEST(P2PGroupTest, CrossingExchangeInOneGroupCompletesUnderRendezvous) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        EXPECT_TRUE(c.options().p2p_rendezvous);
        const int peer = 1 - c.rank();
        const std::vector<float> send = Message(c.rank());
        std::vector<float> recv(6, -1.0f);
        RETURN_IF_ERROR(
            c.P2PGroup({P2POp::Send(ViewOf(send), peer), P2POp::Recv(ViewOf(recv), peer)}));
        EXPECT_EQ(recv, Message(peer)) << "rank " << c.rank();
        const CommStats st = c.stats();
        EXPECT_EQ(st[CommOp::kSend].calls, 1);
        EXPECT_EQ(st[CommOp::kRecv].calls, 1);
        EXPECT_EQ(st[CommOp::kSend].bytes_sent, 24);
        EXPECT_EQ(st[CommOp::kRecv].bytes_received, 24);
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20), /*rendezvous=*/true));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(P2PGroupTest, EmptyGroupCompletesAtOnce) {
  absl::Status s = RunOnRanks(2, [](Communicator& c) -> absl::Status {
    Work w = c.P2PGroupAsync({});
    EXPECT_TRUE(w.Test());
    return w.Wait();
  });
  EXPECT_TRUE(s.ok()) << s;
}

// Both ranks Send, then Recv, as separate blocking calls: under rendezvous no
// send can complete (nobody has posted a receive), so both time out naming
// the peer.
TEST(P2PGroupTest, SeparateCrossingCallsDeadlockUnderRendezvous) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        const int peer = 1 - c.rank();
        const std::vector<float> send = Message(c.rank());
        const absl::Status ss = c.Send(ViewOf(send), peer);
        EXPECT_EQ(ss.code(), absl::StatusCode::kDeadlineExceeded) << ss;
        EXPECT_THAT(std::string(ss.message()),
                    AllOf(HasSubstr(absl::StrCat("rank ", peer)),
                          HasSubstr("has not posted the matching receive")));
        return absl::OkStatus();  // the exchange is abandoned
      },
      WithTimeout(absl::Milliseconds(300), /*rendezvous=*/true));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(P2PGroupTest, SeparateCrossingCallsCompleteWhenEager) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        EXPECT_FALSE(c.options().p2p_rendezvous);
        const int peer = 1 - c.rank();
        const std::vector<float> send = Message(c.rank());
        std::vector<float> recv(6, -1.0f);
        RETURN_IF_ERROR(c.Send(ViewOf(send), peer));
        RETURN_IF_ERROR(c.Recv(ViewOf(recv), peer));
        EXPECT_EQ(recv, Message(peer)) << "rank " << c.rank();
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

// ---- data communicators ----------------------------------------------------------------

TEST(DataDeviceTest, RejectsHostMemoryAndTakesDeviceBuffers) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        EXPECT_FALSE(c.data_device().has_value());
        c.SetDataDevice(Device::CpuAsync());
        EXPECT_EQ(c.data_device(), Device::CpuAsync());

        std::vector<float> host(8, 1.0f);
        const absl::Status bad = c.AllReduce(ViewOf(host), ViewOf(host), ReduceOp::kSum);
        EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
        EXPECT_THAT(std::string(bad.message()), AllOf(HasSubstr("not cpu_async device memory"),
                                                      HasSubstr("control communicator")));

        const int peer = 1 - c.rank();
        const absl::Status bad_send = c.SendAsync(ViewOf(host), peer).Wait();
        EXPECT_EQ(bad_send.code(), absl::StatusCode::kInvalidArgument) << bad_send;
        const absl::Status bad_group = c.P2PGroup({P2POp::Recv(ViewOf(host), peer)});
        EXPECT_EQ(bad_group.code(), absl::StatusCode::kInvalidArgument) << bad_group;

        // cpu memory is another device's: rejected as well.
        ASSIGN_OR_RETURN(Buffer cpu,
                         Buffer::Allocate(Device::Cpu(), 32, MemCategory::kComm, nullptr));
        MutView cpu_view{cpu.data(), 8, DType::kF32};
        EXPECT_EQ(c.AllReduce(cpu_view, cpu_view, ReduceOp::kSum).code(),
                  absl::StatusCode::kInvalidArgument);

        ASSIGN_OR_RETURN(Buffer dev,
                         Buffer::Allocate(Device::CpuAsync(), 32, MemCategory::kComm, nullptr));
        std::fill_n(dev.as<float>(), 8, c.rank() + 1.0f);
        MutView view{dev.data(), 8, DType::kF32};
        RETURN_IF_ERROR(c.AllReduce(view, view, ReduceOp::kSum));
        EXPECT_EQ(std::vector<float>(dev.as<float>(), dev.as<float>() + 8),
                  std::vector<float>(8, 3.0f));
        EXPECT_EQ(c.stats()[CommOp::kAllReduce].calls, 1);  // the rejected calls queued nothing
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(DataDeviceTest, SplitGroupsInheritTheDataDevice) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        c.SetDataDevice(Device::CpuAsync());
        ASSIGN_OR_RETURN(std::unique_ptr<Communicator> child, c.Split(0, c.rank(), "child"));
        if (child == nullptr) return absl::InternalError("no child group");
        EXPECT_EQ(child->data_device(), Device::CpuAsync());
        std::vector<float> host(4, 1.0f);
        const absl::Status bad = child->AllReduce(ViewOf(host), ViewOf(host), ReduceOp::kSum);
        EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
        EXPECT_THAT(std::string(bad.message()), HasSubstr("'child'"));
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

TEST(DataDeviceTest, ControlCommunicatorsTakeHostMemory) {
  absl::Status s = RunOnRanks(2, [](Communicator& c) -> absl::Status {
    std::vector<float> host(4, 1.0f);
    RETURN_IF_ERROR(c.AllReduce(ViewOf(host), ViewOf(host), ReduceOp::kSum));
    EXPECT_EQ(host, std::vector<float>(4, 2.0f));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

// ---- busy and blocked time ----------------------------------------------------------------

// Runs a 1024-float all-reduce on 2 ranks, rank 1 joining 100 ms late; rank 0
// issues it with `issue` and then checks its statistics with `check`.
absl::Status AllReduceWithLateRank(const std::function<Work(Communicator&, MutView)>& issue,
                                   const std::function<void(const CommStats&)>& check) {
  return RunOnRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        std::vector<float> x(1024, 1.0f);
        if (c.rank() == 1) {
          absl::SleepFor(absl::Milliseconds(100));
          return c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum);
        }
        const CommStats before = c.stats();
        EXPECT_EQ(before.busy_seconds, 0.0);
        EXPECT_EQ(before.blocked_seconds, 0.0);
        EXPECT_EQ(before.stream_blocked_seconds, 0.0);
        Work w = issue(c, ViewOf(x));
        check(c.stats());
        RETURN_IF_ERROR(w.Wait());
        EXPECT_EQ(x, std::vector<float>(1024, 2.0f));
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
}

// The op waits for the late peer inside the worker: busy. The blocking call
// waits for the op: blocked.
TEST(CommStatsTest, BusyTimeIncludesWaitingForPeers) {
  absl::Status s = AllReduceWithLateRank(
      [](Communicator& c, MutView x) {
        Work w = c.AllReduceAsync(x, x, ReduceOp::kSum);
        EXPECT_TRUE(w.Wait().ok());
        return w;
      },
      [](const CommStats& st) {
        EXPECT_GE(st.busy_seconds, 0.08);
        EXPECT_GE(st.blocked_seconds, 0.08);
        EXPECT_EQ(st.stream_blocked_seconds, 0.0);
      });
  EXPECT_TRUE(s.ok()) << s;
}

// On an InlineStream the host itself blocks in the call: blocked time.
TEST(CommStatsTest, InlineStreamWaitIsHostBlockedTime) {
  InlineStream stream("cpu");
  absl::Status s = AllReduceWithLateRank(
      [&stream](Communicator& c, MutView x) {
        return c.AllReduceAsync(x, x, ReduceOp::kSum, &stream);
      },
      [](const CommStats& st) {
        EXPECT_GE(st.busy_seconds, 0.08);
        EXPECT_GE(st.blocked_seconds, 0.08) << "the host's wait in the call was not counted";
        EXPECT_EQ(st.stream_blocked_seconds, 0.0);
      });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GE(stream.stats().blocked_s, 0.08);
}

// A CpuStream waits for the op on its worker, without the host and without
// any Work::Wait: stream-blocked time, on the communicator and the stream.
TEST(CommStatsTest, CpuStreamWaitIsStreamBlockedTime) {
  CpuStream stream("compute");
  absl::Status s = AllReduceWithLateRank(
      [&stream](Communicator& c, MutView x) {
        Work w = c.AllReduceAsync(x, x, ReduceOp::kSum, &stream);
        EXPECT_TRUE(stream.Synchronize().ok());
        return w;
      },
      [](const CommStats& st) {
        EXPECT_GE(st.busy_seconds, 0.08);
        EXPECT_GE(st.stream_blocked_seconds, 0.08) << "the stream's wait on the op was not counted";
        EXPECT_LT(st.blocked_seconds, 0.02) << "the host did not block";
      });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GE(stream.stats().blocked_s, 0.08);
}

TEST(CommStatsTest, ResetStatsClearsTheTimes) {
  absl::Status s = RunOnRanks(2, [](Communicator& c) -> absl::Status {
    std::vector<float> x(1024, 1.0f);
    InlineStream stream("cpu");
    RETURN_IF_ERROR(c.AllReduceAsync(ViewOf(x), ViewOf(x), ReduceOp::kSum, &stream).Wait());
    EXPECT_GT(c.stats().busy_seconds, 0.0);
    c.ResetStats();
    const CommStats st = c.stats();
    EXPECT_EQ(st.busy_seconds, 0.0);
    EXPECT_EQ(st.blocked_seconds, 0.0);
    EXPECT_EQ(st.stream_blocked_seconds, 0.0);
    EXPECT_EQ(st[CommOp::kAllReduce].calls, 0);
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(CommStatsTest, BusyTimeAccumulatesOverOps) {
  absl::Status s = RunOnRanks(
      2,
      [](Communicator& c) -> absl::Status {
        std::vector<float> x(1 << 16, 1.0f);
        RETURN_IF_ERROR(c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum));
        const double after_one = c.stats().busy_seconds;
        EXPECT_GT(after_one, 0.0);
        for (int i = 0; i < 3; ++i)
          RETURN_IF_ERROR(c.AllReduce(ViewOf(x), ViewOf(x), ReduceOp::kSum));
        EXPECT_GT(c.stats().busy_seconds, after_one);
        return absl::OkStatus();
      },
      WithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace trireme
