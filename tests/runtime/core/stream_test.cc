// Tests for runtime/core/stream.h: CpuStream and CpuEvent.
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
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace trireme {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A latch that tasks block on until the test opens it. Opens itself on
// destruction so a failing assertion never leaves a stream worker stuck (which
// would hang the stream's destructor).
class Gate {
 public:
  Gate() : future_(promise_.get_future().share()) {}
  ~Gate() { Open(); }

  void Open() {
    std::call_once(opened_, [this] { promise_.set_value(); });
  }
  // A task for CpuStream::Enqueue that blocks until the gate opens.
  CpuStream::Task BlockingTask(std::atomic<bool>* started = nullptr) {
    std::shared_future<void> f = future_;
    return [f, started] {
      if (started != nullptr) started->store(true);
      f.wait();
      return absl::OkStatus();
    };
  }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_;
  std::once_flag opened_;
};

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
  EXPECT_EQ(e->Synchronize(absl::Milliseconds(20)).code(),
            absl::StatusCode::kDeadlineExceeded);

  second.Open();
  EXPECT_TRUE(e->Synchronize().ok());
  EXPECT_TRUE(e->Query());
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
  EXPECT_EQ(e.Synchronize(absl::Milliseconds(10)).code(),
            absl::StatusCode::kDeadlineExceeded);
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

}  // namespace
}  // namespace trireme
