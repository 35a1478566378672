// Tests for runtime/core/stream.h: CpuStream, InlineStream, CpuEvent, stream
// statistics and wait counters, and NewStream.
#include "runtime/core/stream.h"

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/core/device.h"
#include "tests/runtime/core/gate.h"

namespace trireme {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using testing::Gate;

TEST(CpuStreamTest, TasksRunInFifoOrder) {
  std::vector<int> order;  // only the worker touches it until Synchronize returns
  CpuStream stream("fifo");
  EXPECT_EQ(stream.name(), "fifo");
  for (int i = 0; i < 1000; ++i) {
    stream.Enqueue([&order, i] {
      order.push_back(i);
      return absl::OkStatus();
    });
  }
  ASSERT_TRUE(stream.Synchronize().ok());
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(order[i], i);
}

TEST(CpuStreamTest, EnqueueFromManyThreadsRunsEverything) {
  std::atomic<int> ran{0};
  CpuStream stream("mt");
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        stream.Enqueue([&ran] {
          ran.fetch_add(1);
          return absl::OkStatus();
        });
      }
    });
  }
  for (std::thread& t : producers) t.join();
  ASSERT_TRUE(stream.Synchronize().ok());
  EXPECT_EQ(ran.load(), 1000);
}

TEST(CpuStreamTest, SynchronizeOnEmptyStreamIsOk) {
  CpuStream stream("empty");
  EXPECT_TRUE(stream.Synchronize().ok());
  EXPECT_TRUE(stream.Synchronize().ok());
}

TEST(CpuStreamTest, DestructorFinishesQueuedWork) {
  std::atomic<int> ran{0};
  {
    CpuStream stream("drain");
    for (int i = 0; i < 100; ++i) {
      stream.Enqueue([&ran] {
        ran.fetch_add(1);
        return absl::OkStatus();
      });
    }
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(CpuEventTest, NeverRecordedCountsAsComplete) {
  CpuStream stream("s");
  std::unique_ptr<Event> e = stream.NewEvent();
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->Query());
  EXPECT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Synchronize(absl::ZeroDuration()).ok());

  CpuEvent plain;
  EXPECT_TRUE(plain.Query());
  EXPECT_TRUE(plain.Synchronize().ok());
}

TEST(CpuEventTest, RecordQuerySynchronize) {
  std::atomic<bool> started{false};
  CpuStream stream("s");
  Gate gate;
  stream.Enqueue(gate.BlockingTask(&started));
  std::unique_ptr<Event> e = stream.NewEvent();
  ASSERT_TRUE(stream.Record(e.get()).ok());

  // The task before the event is blocked, so the event cannot be complete.
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(e->Query());
  EXPECT_FALSE(e->Query());

  gate.Open();
  EXPECT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Query());
  EXPECT_TRUE(started.load());
  EXPECT_TRUE(stream.Synchronize().ok());
}

TEST(CpuEventTest, EventMayBeDestroyedBeforeItsMarkerRuns) {
  CpuStream stream("s");
  Gate gate;
  stream.Enqueue(gate.BlockingTask());
  {
    std::unique_ptr<Event> e = stream.NewEvent();
    ASSERT_TRUE(stream.Record(e.get()).ok());
  }
  gate.Open();
  EXPECT_TRUE(stream.Synchronize().ok());
}

TEST(CpuEventTest, RerecordingMakesItPendingAgain) {
  CpuStream stream("s");
  std::unique_ptr<Event> e = stream.NewEvent();
  ASSERT_TRUE(stream.Record(e.get()).ok());
  ASSERT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Query());

  Gate gate;
  stream.Enqueue(gate.BlockingTask());
  ASSERT_TRUE(stream.Record(e.get()).ok());
  EXPECT_FALSE(e->Query());
  gate.Open();
  EXPECT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Query());
}

// Re-recording an event that is still pending moves its completion point: the
// marker of the earlier recording must not complete it.
TEST(CpuEventTest, RerecordingWhilePendingWaitsForTheNewPoint) {
  CpuStream stream("s");
  Gate first;
  Gate second;
  std::unique_ptr<Event> e = stream.NewEvent();
  stream.Enqueue(first.BlockingTask());
  ASSERT_TRUE(stream.Record(e.get()).ok());
  std::atomic<bool> second_started{false};
  stream.Enqueue(second.BlockingTask(&second_started));
  ASSERT_TRUE(stream.Record(e.get()).ok());

  first.Open();
  // Once the second task has started, the first recording's marker has run.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!second_started.load() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_TRUE(second_started.load());
  EXPECT_FALSE(e->Query());
  EXPECT_EQ(e->Synchronize(absl::Milliseconds(20)).code(), absl::StatusCode::kDeadlineExceeded);

  second.Open();
  EXPECT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Query());
}

// CUDA's cudaStreamWaitEvent semantics: a wait refers to the recording that
// was the latest when Wait was called; recording the event again afterwards
// (on a stream that will take long) does not hold the waiting stream back.
TEST(CpuEventTest, WaitRefersToTheRecordingAtTheTimeOfTheCall) {
  CpuStream producer("producer");
  CpuStream consumer("consumer");
  Gate first;
  Gate second;
  std::unique_ptr<Event> e = producer.NewEvent();
  producer.Enqueue(first.BlockingTask());
  ASSERT_TRUE(producer.Record(e.get()).ok());
  ASSERT_TRUE(consumer.Wait(*e).ok());
  std::atomic<bool> consumed{false};
  consumer.Enqueue([&consumed] {
    consumed = true;
    return absl::OkStatus();
  });
  producer.Enqueue(second.BlockingTask());
  ASSERT_TRUE(producer.Record(e.get()).ok());  // a new recording, after the wait

  first.Open();
  EXPECT_TRUE(consumer.Synchronize().ok());  // would hang on the second gate otherwise
  EXPECT_TRUE(consumed.load());
  EXPECT_FALSE(e->Query());  // the event itself is at its latest recording
  second.Open();
  EXPECT_TRUE(producer.Synchronize().ok());
  EXPECT_TRUE(e->Query());
}

// A snapshot keeps the recording it was taken at, the event moves on.
TEST(CpuEventTest, SnapshotKeepsItsRecording) {
  CpuEvent e;
  e.Reset();
  CpuEvent first = e.Snapshot();
  e.Complete(absl::OkStatus());
  e.Reset();  // a second recording, pending
  EXPECT_TRUE(first.Query());
  EXPECT_FALSE(e.Query());
  e.Complete(absl::InternalError("second"));
  EXPECT_TRUE(first.Synchronize().ok());
  EXPECT_EQ(e.Synchronize().code(), absl::StatusCode::kInternal);
}

// A fake event kind, to check that CpuStream only records its own events.
class OtherEvent final : public Event {
 public:
  bool Query() const override { return true; }
  absl::Status Synchronize(absl::Duration) override {
    ++synchronized;
    return absl::OkStatus();
  }
  using Event::Synchronize;
  int synchronized = 0;
};

TEST(CpuStreamTest, RecordRejectsForeignEventsButWaitAcceptsThem) {
  OtherEvent other;
  CpuStream stream("s");
  const absl::Status s = stream.Record(&other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'s'"));
  ASSERT_TRUE(stream.Wait(other).ok());
  EXPECT_TRUE(stream.Synchronize().ok());
  EXPECT_EQ(other.synchronized, 1);
}

TEST(CpuStreamTest, WaitOrdersAcrossStreams) {
  // State the tasks touch is declared before the streams so it outlives them.
  std::mutex mu;
  std::vector<char> order;
  std::atomic<bool> b_ran{false};
  auto append = [&mu, &order](char c) {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(c);
  };
  CpuStream a("a");
  CpuStream b("b");
  Gate gate;

  a.Enqueue(gate.BlockingTask());
  a.Enqueue([&] {
    append('a');
    return absl::OkStatus();
  });
  std::unique_ptr<Event> e = a.NewEvent();
  ASSERT_TRUE(a.Record(e.get()).ok());

  ASSERT_TRUE(b.Wait(*e).ok());
  b.Enqueue([&] {
    append('b');
    b_ran.store(true);
    return absl::OkStatus();
  });

  // B is free to run, but its task is behind the wait on A's event.
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(b_ran.load());
  EXPECT_FALSE(e->Query());

  gate.Open();
  ASSERT_TRUE(b.Synchronize().ok());
  EXPECT_TRUE(b_ran.load());
  EXPECT_TRUE(e->Query());
  ASSERT_TRUE(a.Synchronize().ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(order, ElementsAre('a', 'b'));
}

TEST(CpuStreamTest, WaitOnCompleteEventDoesNotBlock) {
  std::atomic<bool> ran{false};
  CpuStream a("a");
  CpuStream b("b");
  std::unique_ptr<Event> never_recorded = a.NewEvent();
  ASSERT_TRUE(b.Wait(*never_recorded).ok());
  b.Enqueue([&ran] {
    ran.store(true);
    return absl::OkStatus();
  });
  ASSERT_TRUE(b.Synchronize().ok());
  EXPECT_TRUE(ran.load());
}

TEST(CpuStreamTest, TaskErrorIsStickyUntilSynchronize) {
  std::atomic<bool> later_ran{false};
  CpuStream stream("err");
  stream.Enqueue([] { return absl::OkStatus(); });
  stream.Enqueue([] { return absl::InternalError("first failure"); });
  stream.Enqueue([] { return absl::DataLossError("second failure"); });
  std::unique_ptr<Event> after = stream.NewEvent();
  ASSERT_TRUE(stream.Record(after.get()).ok());
  stream.Enqueue([&later_ran] {
    later_ran.store(true);
    return absl::OkStatus();
  });

  const absl::Status s = stream.Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("first failure"));
  EXPECT_TRUE(later_ran.load());  // a failure does not stop the stream

  // The event recorded after the failing task carries the error.
  const absl::Status es = after->Synchronize();
  EXPECT_EQ(es.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(es.message()), HasSubstr("first failure"));
  EXPECT_TRUE(after->Query());

  // Synchronize consumed the error.
  EXPECT_TRUE(stream.Synchronize().ok());
  std::unique_ptr<Event> clean = stream.NewEvent();
  ASSERT_TRUE(stream.Record(clean.get()).ok());
  EXPECT_TRUE(clean->Synchronize().ok());
  stream.Enqueue([] { return absl::OkStatus(); });
  EXPECT_TRUE(stream.Synchronize().ok());
}

TEST(CpuStreamTest, EventRecordedBeforeTheFailureIsOk) {
  CpuStream stream("err");
  std::unique_ptr<Event> before = stream.NewEvent();
  ASSERT_TRUE(stream.Record(before.get()).ok());
  stream.Enqueue([] { return absl::AbortedError("late"); });
  EXPECT_EQ(stream.Synchronize().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(before->Synchronize().ok());
}

TEST(CpuEventTest, SynchronizeTimesOut) {
  CpuStream stream("slow");
  Gate gate;
  stream.Enqueue(gate.BlockingTask());
  std::unique_ptr<Event> e = stream.NewEvent();
  ASSERT_TRUE(stream.Record(e.get()).ok());

  const absl::Time start = absl::Now();
  const absl::Status s = e->Synchronize(absl::Milliseconds(50));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(waited, absl::Milliseconds(45));
  EXPECT_FALSE(e->Query());

  gate.Open();
  EXPECT_TRUE(e->Synchronize(absl::Seconds(10)).ok());
}

TEST(CpuEventTest, ResetAndCompleteDirectly) {
  CpuEvent e;
  e.Reset();
  EXPECT_FALSE(e.Query());
  EXPECT_EQ(e.Synchronize(absl::Milliseconds(10)).code(), absl::StatusCode::kDeadlineExceeded);
  std::thread completer([&e] {
    absl::SleepFor(absl::Milliseconds(10));
    e.Complete(absl::UnavailableError("peer gone"));
  });
  const absl::Status s = e.Synchronize();
  completer.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(e.Query());
  e.Reset();  // pending again, and the old status is gone
  e.Complete(absl::OkStatus());
  EXPECT_TRUE(e.Synchronize().ok());
}

TEST(CpuStreamTest, TwoStreamsOverlap) {
  CpuStream a("compute");
  CpuStream b("comm");
  auto sleep200 = [] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return absl::OkStatus();
  };
  const auto start = std::chrono::steady_clock::now();
  a.Enqueue(sleep200);
  b.Enqueue(sleep200);
  ASSERT_TRUE(a.Synchronize().ok());
  ASSERT_TRUE(b.Synchronize().ok());
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  EXPECT_GE(ms, 195);
  EXPECT_LT(ms, 350) << "the two streams did not run concurrently";
}

TEST(CpuStreamTest, DeviceIsCpuAsyncUnlessGiven) {
  CpuStream plain("plain");
  EXPECT_EQ(plain.device(), Device::CpuAsync());
  EXPECT_EQ(plain.host(), &plain);
  CpuStream other("other", Device::Cpu());
  EXPECT_EQ(other.device(), Device::Cpu());
}

// ---------------------------------------------------------------------------
// InlineStream: the cpu and meta devices' stream.

TEST(InlineStreamTest, RunsEachTaskOnTheCallingThreadAtEnqueue) {
  InlineStream stream("inline");
  EXPECT_EQ(stream.name(), "inline");
  EXPECT_EQ(stream.device(), Device::Cpu());
  EXPECT_EQ(stream.host(), &stream);
  std::thread::id ran_on;
  int value = 0;
  stream.Enqueue([&] {
    ran_on = std::this_thread::get_id();
    value = 7;
    return absl::OkStatus();
  });
  EXPECT_EQ(value, 7);  // already ran, without a Synchronize
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_TRUE(stream.Synchronize().ok());
}

TEST(InlineStreamTest, DeviceIsCpuUnlessGiven) {
  InlineStream meta("meta", Device::Meta());
  EXPECT_EQ(meta.device(), Device::Meta());
  EXPECT_EQ(meta.name(), "meta");
}

TEST(InlineStreamTest, RecordCompletesAtOnce) {
  InlineStream stream("s");
  std::unique_ptr<Event> e = stream.NewEvent();
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(stream.Record(e.get()).ok());
  EXPECT_TRUE(e->Query());
  EXPECT_TRUE(e->Synchronize(absl::ZeroDuration()).ok());
}

TEST(InlineStreamTest, RecordCarriesTheStickyErrorUntilSynchronize) {
  InlineStream stream("err");
  std::unique_ptr<Event> before = stream.NewEvent();
  ASSERT_TRUE(stream.Record(before.get()).ok());
  bool later_ran = false;
  stream.Enqueue([] { return absl::InternalError("first failure"); });
  stream.Enqueue([] { return absl::DataLossError("second failure"); });
  stream.Enqueue([&later_ran] {
    later_ran = true;
    return absl::OkStatus();
  });
  EXPECT_TRUE(later_ran);  // a failure does not stop the stream

  std::unique_ptr<Event> after = stream.NewEvent();
  ASSERT_TRUE(stream.Record(after.get()).ok());
  EXPECT_TRUE(after->Query());  // complete at once, with the error
  const absl::Status es = after->Synchronize(absl::ZeroDuration());
  EXPECT_EQ(es.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(es.message()), HasSubstr("first failure"));
  EXPECT_TRUE(before->Synchronize().ok());  // recorded before the failure

  const absl::Status s = stream.Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("first failure"));
  // Synchronize consumed the error: later events are clean.
  EXPECT_TRUE(stream.Synchronize().ok());
  std::unique_ptr<Event> clean = stream.NewEvent();
  ASSERT_TRUE(stream.Record(clean.get()).ok());
  EXPECT_TRUE(clean->Synchronize(absl::ZeroDuration()).ok());
}

TEST(InlineStreamTest, RecordRejectsForeignEvents) {
  OtherEvent other;
  InlineStream stream("inl");
  const absl::Status s = stream.Record(&other);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'inl'"));
  ASSERT_TRUE(stream.Wait(other).ok());
  EXPECT_EQ(other.synchronized, 1);  // waited at once, on the host
}

TEST(InlineStreamTest, WaitBlocksTheHostUntilTheEventCompletes) {
  CpuStream producer("producer");
  Gate gate;
  producer.Enqueue(gate.BlockingTask());
  std::unique_ptr<Event> e = producer.NewEvent();
  ASSERT_TRUE(producer.Record(e.get()).ok());

  InlineStream consumer("consumer");
  std::thread opener([&gate] {
    absl::SleepFor(absl::Milliseconds(100));
    gate.Open();
  });
  const absl::Time start = absl::Now();
  const absl::Status ws = consumer.Wait(*e);
  const absl::Duration waited = absl::Now() - start;
  const bool complete_on_return = e->Query();
  opener.join();
  EXPECT_TRUE(ws.ok()) << ws;
  EXPECT_TRUE(complete_on_return);
  EXPECT_GE(waited, absl::Milliseconds(90));
  EXPECT_TRUE(consumer.Synchronize().ok());
  EXPECT_TRUE(producer.Synchronize().ok());
}

// ---------------------------------------------------------------------------
// Statistics and wait counters, on both host stream kinds.

struct HostStreamCase {
  const char* name;
  Device device;
};

class HostStreamStatsTest : public ::testing::TestWithParam<HostStreamCase> {
 protected:
  // A new stream of the parameter's device (InlineStream or CpuStream).
  std::unique_ptr<Stream> MakeStream(const std::string& name) {
    absl::StatusOr<std::unique_ptr<Stream>> s = NewStream(GetParam().device, name);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
};

absl::Status Sleep(absl::Duration d) {
  absl::SleepFor(d);
  return absl::OkStatus();
}

TEST_P(HostStreamStatsTest, CountsTasksAndBusyTime) {
  std::unique_ptr<Stream> stream = MakeStream("busy");
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->stats().tasks, 0);
  for (int i = 0; i < 3; ++i) stream->host()->Enqueue([] { return Sleep(absl::Milliseconds(20)); });
  ASSERT_TRUE(stream->Synchronize().ok());
  const StreamStats s = stream->stats();
  EXPECT_EQ(s.tasks, 3);
  EXPECT_GE(s.busy_s, 0.055);
  EXPECT_EQ(s.blocked_s, 0.0);
}

// A Wait on an event that completes 100 ms later: the time counts as blocked
// (on the stream and on the counter, identically), not as busy.
TEST_P(HostStreamStatsTest, WaitTimeIsBlockedNotBusy) {
  CpuStream producer("producer");
  Gate gate;
  producer.Enqueue(gate.BlockingTask());
  std::unique_ptr<Event> e = producer.NewEvent();
  ASSERT_TRUE(producer.Record(e.get()).ok());

  std::unique_ptr<Stream> stream = MakeStream("waiter");
  ASSERT_NE(stream, nullptr);
  WaitCounter counter = std::make_shared<std::atomic<int64_t>>(0);
  std::thread opener([&gate] {
    absl::SleepFor(absl::Milliseconds(100));
    gate.Open();
  });
  const absl::Status ws = stream->Wait(*e, counter);
  opener.join();
  EXPECT_TRUE(ws.ok()) << ws;
  ASSERT_TRUE(stream->Synchronize().ok());

  const StreamStats s = stream->stats();
  EXPECT_EQ(s.tasks, 1);  // the wait
  EXPECT_GE(s.blocked_s, 0.09);
  EXPECT_LT(s.busy_s, 0.05) << "blocked time was counted as busy";
  EXPECT_GE(counter->load(), 90 * 1000 * 1000);
  EXPECT_DOUBLE_EQ(static_cast<double>(counter->load()) * 1e-9, s.blocked_s);
  EXPECT_TRUE(producer.Synchronize().ok());
}

TEST_P(HostStreamStatsTest, WaitWithoutCounterStillCountsOnTheStream) {
  CpuStream producer("producer");
  producer.Enqueue([] { return Sleep(absl::Milliseconds(60)); });
  std::unique_ptr<Event> e = producer.NewEvent();
  ASSERT_TRUE(producer.Record(e.get()).ok());
  std::unique_ptr<Stream> stream = MakeStream("waiter");
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(stream->Wait(*e).ok());
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_GE(stream->stats().blocked_s, 0.03);
}

TEST_P(HostStreamStatsTest, WaitOnACompleteEventBlocksAlmostNothing) {
  CpuStream producer("producer");
  std::unique_ptr<Event> e = producer.NewEvent();  // never recorded: complete
  std::unique_ptr<Stream> stream = MakeStream("waiter");
  ASSERT_NE(stream, nullptr);
  WaitCounter counter = std::make_shared<std::atomic<int64_t>>(0);
  ASSERT_TRUE(stream->Wait(*e, counter).ok());
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_LT(stream->stats().blocked_s, 0.02);
  EXPECT_LT(counter->load(), 20 * 1000 * 1000);
}

INSTANTIATE_TEST_SUITE_P(Devices, HostStreamStatsTest,
                         ::testing::Values(HostStreamCase{"cpu", Device::Cpu()},
                                           HostStreamCase{"cpu_async", Device::CpuAsync()}),
                         [](const ::testing::TestParamInfo<HostStreamCase>& info) {
                           return std::string(info.param.name);
                         });

// An InlineStream runs each task on the thread that enqueues it, so tasks
// enqueued from two threads overlap. One thread's compute task must still
// count as busy for its whole duration while another thread's Wait on the
// same stream is blocked.
TEST(InlineStreamTest, ConcurrentWaitDoesNotReduceAnotherThreadsBusyTime) {
  CpuStream producer("producer");
  Gate gate;
  producer.Enqueue(gate.BlockingTask());
  std::unique_ptr<Event> e = producer.NewEvent();
  ASSERT_TRUE(producer.Record(e.get()).ok());

  InlineStream stream("shared");
  std::thread waiter([&] {
    absl::SleepFor(absl::Milliseconds(10));
    EXPECT_TRUE(stream.Wait(*e).ok());  // blocked about 60 ms
  });
  std::thread opener([&gate] {
    absl::SleepFor(absl::Milliseconds(70));
    gate.Open();
  });
  stream.Enqueue([] { return Sleep(absl::Milliseconds(150)); });  // busy 150 ms
  waiter.join();
  opener.join();

  const StreamStats s = stream.stats();
  EXPECT_EQ(s.tasks, 2);
  EXPECT_GE(s.blocked_s, 0.04);
  // Regression: busy time once subtracted the growth of the stream-wide
  // blocked counter during a task, so a Wait blocking on another thread at
  // the same time was taken off this task (~150 ms - ~60 ms). A task now
  // subtracts only its own thread's waiting.
  EXPECT_GE(s.busy_s, 0.14) << "busy time lost the concurrent wait (blocked_s " << s.blocked_s
                            << ")";
  EXPECT_TRUE(producer.Synchronize().ok());
}

// One counter shared by two streams (e.g. every stream waiting on the DP
// communicator) sums what both spent blocked.
TEST(WaitCounterTest, SharedCounterSumsEveryStream) {
  CpuStream producer("producer");
  Gate gate;
  producer.Enqueue(gate.BlockingTask());
  std::unique_ptr<Event> e = producer.NewEvent();
  ASSERT_TRUE(producer.Record(e.get()).ok());

  WaitCounter counter = std::make_shared<std::atomic<int64_t>>(0);
  CpuStream b("b");
  CpuStream c("c");
  ASSERT_TRUE(b.Wait(*e, counter).ok());
  ASSERT_TRUE(c.Wait(*e, counter).ok());
  absl::SleepFor(absl::Milliseconds(80));
  gate.Open();
  ASSERT_TRUE(b.Synchronize().ok());
  ASSERT_TRUE(c.Synchronize().ok());

  const double b_blocked = b.stats().blocked_s;
  const double c_blocked = c.stats().blocked_s;
  EXPECT_GE(b_blocked, 0.07);
  EXPECT_GE(c_blocked, 0.07);
  EXPECT_NEAR(static_cast<double>(counter->load()) * 1e-9, b_blocked + c_blocked, 1e-6);
  EXPECT_TRUE(producer.Synchronize().ok());
}

// ---------------------------------------------------------------------------
// NewStream

TEST(NewStreamTest, CpuAndMetaGetInlineStreams) {
  for (Device d : {Device::Cpu(), Device::Meta()}) {
    SCOPED_TRACE(d.ToString());
    absl::StatusOr<std::unique_ptr<Stream>> s = NewStream(d, "main");
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NE(dynamic_cast<InlineStream*>(s->get()), nullptr);
    EXPECT_EQ((*s)->device(), d);
    EXPECT_EQ((*s)->name(), "main");
    EXPECT_NE((*s)->host(), nullptr);
  }
}

TEST(NewStreamTest, CpuAsyncGetsACpuStreamThatRunsAhead) {
  absl::StatusOr<std::unique_ptr<Stream>> s = NewStream(Device::CpuAsync(), "async");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NE(dynamic_cast<CpuStream*>(s->get()), nullptr);
  EXPECT_EQ((*s)->device(), Device::CpuAsync());
  EXPECT_EQ((*s)->name(), "async");
  HostStream* host = (*s)->host();
  ASSERT_NE(host, nullptr);
  Gate gate;
  std::atomic<bool> ran{false};
  host->Enqueue(gate.BlockingTask());
  host->Enqueue([&ran] {
    ran.store(true);
    return absl::OkStatus();
  });
  EXPECT_FALSE(ran.load());  // Enqueue returned before the task ran
  gate.Open();
  ASSERT_TRUE((*s)->Synchronize().ok());
  EXPECT_TRUE(ran.load());
}

TEST(NewStreamTest, CudaWithoutCudaBuildIsUnavailable) {
  if (BuiltWithCuda()) GTEST_SKIP() << "built with --config=cuda";
  absl::StatusOr<std::unique_ptr<Stream>> s = NewStream(Device::Cuda(0), "gpu");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("cuda:0"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("'gpu'"));
}

}  // namespace
}  // namespace trireme
