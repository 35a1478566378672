#include "runtime/comm/threads_comm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "runtime/comm/internal/data_mover.h"
#include "runtime/core/status.h"

namespace trireme {
namespace internal {

// Shared by every group of one world: the first failure.
struct AbortState {
  std::mutex mu;
  bool aborted = false;  // guarded by mu
  int rank = -1;
  absl::Status reason;
};

// One collective in progress, keyed by sequence number.
struct Slot {
  explicit Slot(int n)
      : fp(n),
        in(n, nullptr),
        out(n, nullptr),
        color(n),
        key(n),
        here{std::vector<bool>(n), std::vector<bool>(n), std::vector<bool>(n)} {}
  std::vector<Fingerprint> fp;
  std::vector<const void*> in;
  std::vector<void*> out;
  std::vector<int> color, key;  // Split
  std::map<int, std::shared_ptr<ThreadsGroup>> children;
  int count[3] = {0, 0, 0};
  std::vector<bool> here[3];
  absl::Status failed;  // set when a rank gave up: nobody may touch buffers
  int left = 0;
  int readers = 0;  // ranks inside `work` (possibly reading others' buffers)
};

struct Message {
  Fingerprint fp;
  std::vector<char> data;
  // Set (under the group's mutex) when the receiver has taken it; the
  // sender waits for it in rendezvous mode.
  std::shared_ptr<bool> taken = std::make_shared<bool>(false);
};

struct ThreadsGroup {
  std::string name;
  std::vector<int> world_ranks;  // group rank -> world rank
  std::shared_ptr<AbortState> abort;
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Slot> slots;                           // guarded by mu
  std::map<std::pair<int, int>, std::deque<Message>> mail;  // (src, dst)
  int size() const { return static_cast<int>(world_ranks.size()); }
};

}  // namespace internal

namespace {

using internal::Slot;
using internal::ThreadsGroup;
using Lock = std::unique_lock<std::mutex>;

constexpr auto kPoll = std::chrono::milliseconds(20);

// Reads the abort state; returns Aborted describing `ctx` if the world failed.
absl::Status CheckAbort(const ThreadsGroup& g, const std::string& what) {
  std::lock_guard<std::mutex> lock(g.abort->mu);
  if (!g.abort->aborted) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(what, " abandoned: rank ", g.abort->rank,
                                         " failed: ", g.abort->reason.ToString()));
}

class ThreadsCommunicator final : public Communicator {
 public:
  ThreadsCommunicator(std::shared_ptr<ThreadsGroup> g, int rank, CommOptions options)
      : Communicator(rank, g->size(), g->name, options), g_(std::move(g)) {}
  ~ThreadsCommunicator() override { DrainWorker(); }

  const char* backend() const override { return "threads"; }
  bool moves_memory_of(const Device&) const override { return true; }

 protected:
  absl::Status DoAllGather(const OpContext& ctx, ConstView send, MutView recv) override {
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(recv.data));
    return Collective(ctx, send.data, recv.data, /*depart=*/true, [&](Slot& s) {
      return Drained(*mover, [&]() -> absl::Status {
        const int64_t b = send.bytes();
        // Start at the next rank so ranks read different sources.
        for (int k = 1; k <= size(); ++k) {
          const int j = (rank() + k) % size();
          RETURN_IF_ERROR(mover->Copy(static_cast<char*>(recv.data) + j * b, s.in[j], b));
        }
        return absl::OkStatus();
      }());
    });
  }

  absl::Status DoReduceScatter(const OpContext& ctx, ConstView send, MutView recv,
                               ReduceOp op) override {
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(recv.data));
    return Collective(ctx, send.data, recv.data, /*depart=*/true, [&](Slot& s) {
      const int64_t c = recv.count;
      return Drained(*mover,
                     mover->Reduce(send.dtype, op, s.in, rank() * c, (rank() + 1) * c, recv.data));
    });
  }

  absl::Status DoAllReduce(const OpContext& ctx, ConstView send, MutView recv,
                           ReduceOp op) override {
    // Like a ring: (A) each rank reduces its chunk of every input into its own
    // recv; once all chunks are done no input is read any more, so (B) each
    // rank copies the other chunks from their owners' recv; (C) a rank leaves
    // only when nobody still reads its chunk. No shared scratch.
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(recv.data));
    return Collective(ctx, send.data, recv.data, /*depart=*/true, [&](Slot& s) {
      const int64_t esize = DTypeSize(send.dtype);
      std::vector<int64_t> offset(size() + 1, 0);
      for (int i = 0; i < size(); ++i) {
        offset[i + 1] = offset[i] + RingSegment(send.count, size(), i);
      }
      char* out = static_cast<char*>(recv.data);
      // Others read this chunk after the phase: finished before it.
      RETURN_IF_ERROR(
          Drained(*mover, mover->Reduce(send.dtype, op, s.in, offset[rank()], offset[rank() + 1],
                                        out + offset[rank()] * esize)));
      RETURN_IF_ERROR(PhaseUnlocked(s, 1, ctx));
      return Drained(*mover, [&]() -> absl::Status {
        for (int j = 0; j < size(); ++j) {
          const int64_t bytes = (offset[j + 1] - offset[j]) * esize;
          if (j == rank() || bytes == 0) continue;
          RETURN_IF_ERROR(mover->Copy(out + offset[j] * esize,
                                      static_cast<const char*>(s.out[j]) + offset[j] * esize,
                                      bytes));
        }
        return absl::OkStatus();
      }());
    });
  }

  absl::Status DoBroadcast(const OpContext& ctx, MutView buf, int root) override {
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(buf.data));
    return Collective(ctx, buf.data, buf.data, /*depart=*/true, [&](Slot& s) {
      return Drained(*mover, rank() != root ? mover->Copy(buf.data, s.in[root], buf.bytes())
                                            : absl::OkStatus());
    });
  }

  absl::Status DoBarrier(const OpContext& ctx) override {
    return Collective(ctx, nullptr, nullptr, /*depart=*/false,
                      [](Slot&) { return absl::OkStatus(); });
  }

  absl::StatusOr<std::unique_ptr<Communicator>> DoSplit(const OpContext& ctx, int color, int key,
                                                        const std::string& name) override {
    std::shared_ptr<ThreadsGroup> child;
    int child_rank = -1;
    absl::Status st = Collective(
        ctx, nullptr, nullptr, /*depart=*/false,
        [&](Slot& s) {
          Lock lk(g_->mu);
          std::vector<std::pair<int, int>> members;  // (key, rank)
          for (int j = 0; j < size(); ++j) {
            if (s.color[j] == color) members.push_back({s.key[j], j});
          }
          std::sort(members.begin(), members.end());
          std::shared_ptr<ThreadsGroup>& c = s.children[color];
          if (c == nullptr) {
            c = std::make_shared<ThreadsGroup>();
            c->name = name;
            c->abort = g_->abort;
            for (auto& m : members) c->world_ranks.push_back(g_->world_ranks[m.second]);
          }
          for (size_t i = 0; i < members.size(); ++i) {
            if (members[i].second == rank()) child_rank = static_cast<int>(i);
          }
          child = c;
          return absl::OkStatus();
        },
        color, key);
    if (!st.ok()) return st;
    if (color < 0) return std::unique_ptr<Communicator>();
    return std::unique_ptr<Communicator>(new ThreadsCommunicator(child, child_rank, options()));
  }

  absl::Status DoSend(const OpContext& ctx, ConstView buf, int peer) override {
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(buf.data));
    ASSIGN_OR_RETURN(internal::Message m, Stage(*mover, ctx.fp, buf));
    Lock lk(g_->mu);
    std::shared_ptr<bool> taken = Post(std::move(m), peer);
    if (!options().p2p_rendezvous) return absl::OkStatus();
    return AwaitTaken(ctx, lk, {{taken, peer}});
  }

  absl::Status DoRecv(const OpContext& ctx, MutView buf, int peer) override {
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(buf.data));
    Lock lk(g_->mu);
    return Take(ctx, lk, *mover, ctx.fp, buf, peer);
  }

  absl::Status DoP2PGroup(const OpContext& ctx, const std::vector<P2POp>& ops) override {
    // Every send is posted first, then the receives are taken in order, then
    // (rendezvous) the sends are awaited: nothing in the group waits for
    // another of its own operations.
    ASSIGN_OR_RETURN(internal::DataMover * mover, Mover(ops.empty() ? nullptr : ops[0].buf.data));
    std::vector<internal::Message> staged(ops.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind != P2POp::Kind::kSend) continue;
      ASSIGN_OR_RETURN(staged[i], Stage(*mover, ctx.group[i], ops[i].buf));
    }
    Lock lk(g_->mu);
    std::vector<std::pair<std::shared_ptr<bool>, int>> sends;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind != P2POp::Kind::kSend) continue;
      sends.push_back({Post(std::move(staged[i]), ops[i].peer), ops[i].peer});
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].kind != P2POp::Kind::kRecv) continue;
      RETURN_IF_ERROR(Take(ctx, lk, *mover, ctx.group[i], ops[i].buf, ops[i].peer));
    }
    if (!options().p2p_rendezvous) return absl::OkStatus();
    return AwaitTaken(ctx, lk, sends);
  }

 private:
  // The data mover for this op: of the data device (SetDataDevice), or, on a
  // communicator without one, of the memory `sample` (one of the op's
  // buffers) lies in -- host memory unless a GPU's. Made on first use and
  // kept while the device stays. Worker thread only.
  absl::StatusOr<internal::DataMover*> Mover(const void* sample) {
    Device device = Device::Cpu();
    if (data_device()) {
      device = *data_device();
    } else {
      ASSIGN_OR_RETURN(device, internal::DeviceOfPointer(sample));
    }
    if (mover_ == nullptr || mover_device_ != device) {
      ASSIGN_OR_RETURN(mover_, internal::NewDataMover(device));
      mover_device_ = device;
    }
    return mover_.get();
  }

  // Waits for everything `mover` issued (nothing may still read other ranks'
  // buffers once this rank leaves), and returns the first error: `issued`,
  // the result of issuing it, or the wait's.
  static absl::Status Drained(internal::DataMover& mover, absl::Status issued) {
    absl::Status finished = mover.Finish();
    return issued.ok() ? finished : issued;
  }

  // A message holding a host copy of `buf` (messages wait in host memory:
  // an eager send returns before the receiver exists).
  static absl::StatusOr<internal::Message> Stage(internal::DataMover& mover, const Fingerprint& fp,
                                                 ConstView buf) {
    internal::Message m;
    m.fp = fp;
    m.data.resize(buf.bytes());
    RETURN_IF_ERROR(mover.ToHost(m.data.data(), buf.data, buf.bytes()));
    return m;
  }

  // Puts `m` in the (rank -> peer) mailbox. REQUIRES: g_->mu.
  std::shared_ptr<bool> Post(internal::Message m, int peer) {
    std::shared_ptr<bool> taken = m.taken;
    g_->mail[{rank(), peer}].push_back(std::move(m));
    g_->cv.notify_all();
    return taken;
  }

  // Waits until `done()` (lock held, released while sleeping), the world
  // aborts or the deadline passes (DeadlineExceeded ending in `waiting`).
  template <typename Pred>
  absl::Status Await(const OpContext& ctx, Lock& lk, Pred done, const std::string& waiting) {
    StallWatch watch;
    while (!done()) {
      RETURN_IF_ERROR(CheckAbort(*g_, ctx.Describe()));
      watch.Poll();
      const absl::Time now = absl::Now();
      if (now >= ctx.deadline) {
        return absl::DeadlineExceededError(absl::StrCat(ctx.Describe(), " timed out after ",
                                                        absl::FormatDuration(options().timeout),
                                                        ": ", waiting, watch.Note()));
      }
      g_->cv.wait_for(lk, std::min<std::chrono::nanoseconds>(
                              kPoll, absl::ToChronoNanoseconds(ctx.deadline - now)));
    }
    return absl::OkStatus();
  }

  std::string Who(int peer) const {
    return absl::StrCat("rank ", peer, " (world rank ", g_->world_ranks[peer], ")");
  }

  // Takes the next message from `peer` into `buf`, checking it is the one
  // `fp` expects. REQUIRES: g_->mu (held by `lk`).
  absl::Status Take(const OpContext& ctx, Lock& lk, internal::DataMover& mover,
                    const Fingerprint& fp, MutView buf, int peer) {
    std::deque<internal::Message>& box = g_->mail[{peer, rank()}];
    RETURN_IF_ERROR(Await(
        ctx, lk, [&box] { return !box.empty(); }, absl::StrCat(Who(peer), " has not sent")));
    internal::Message m = std::move(box.front());
    box.pop_front();
    *m.taken = true;
    g_->cv.notify_all();
    if (m.fp.count != buf.count || m.fp.dtype != buf.dtype || m.fp.seq != fp.seq) {
      return absl::InvalidArgumentError(absl::StrCat(
          ctx.Describe(), ": rank ", peer, " sent ", m.fp.ToString(), " but this rank expects ",
          buf.count, " elements of ", DTypeName(buf.dtype), " (seq ", fp.seq, ")"));
    }
    return mover.FromHost(buf.data, m.data.data(), buf.bytes());
  }

  // Rendezvous: waits until every posted send has been taken by its peer.
  absl::Status AwaitTaken(const OpContext& ctx, Lock& lk,
                          const std::vector<std::pair<std::shared_ptr<bool>, int>>& sends) {
    for (const auto& [taken, peer] : sends) {
      RETURN_IF_ERROR(Await(
          ctx, lk, [&t = taken] { return *t; },
          absl::StrCat(Who(peer),
                       " has not posted the matching receive "
                       "(rendezvous)")));
    }
    return absl::OkStatus();
  }

  // Marks this rank present in `phase` and waits (lock held, released while
  // sleeping) until all ranks are, the world aborts, a rank gives up, or the
  // deadline passes (then the slot is poisoned so nobody touches buffers).
  absl::Status Phase(Slot& s, int phase, const OpContext& ctx, Lock& lk) {
    s.here[phase][rank()] = true;
    if (++s.count[phase] == size()) {
      // Phase 0 complete: every rank may now read the others' buffers, and
      // holds a reader slot until it is done with them (see Collective).
      if (phase == 0) s.readers = size();
      g_->cv.notify_all();
    }
    StallWatch watch;
    while (s.count[phase] < size()) {
      if (!s.failed.ok()) return s.failed;
      if (absl::Status a = CheckAbort(*g_, ctx.Describe()); !a.ok()) {
        s.failed = a;  // poisoned: a rank arriving later must not touch buffers
        g_->cv.notify_all();
        return a;
      }
      watch.Poll();
      const absl::Time now = absl::Now();
      if (now >= ctx.deadline) {
        std::vector<std::string> missing;
        for (int j = 0; j < size(); ++j) {
          if (!s.here[phase][j]) {
            missing.push_back(absl::StrCat(j, " (world rank ", g_->world_ranks[j], ")"));
          }
        }
        s.failed = absl::DeadlineExceededError(absl::StrCat(
            ctx.Describe(), " timed out after ", absl::FormatDuration(options().timeout),
            ": ranks not arrived: ", absl::StrJoin(missing, ", "), watch.Note()));
        g_->cv.notify_all();
        return s.failed;
      }
      g_->cv.wait_for(lk, std::min<std::chrono::nanoseconds>(
                              kPoll, absl::ToChronoNanoseconds(ctx.deadline - now)));
    }
    return absl::OkStatus();
  }

  absl::Status PhaseUnlocked(Slot& s, int phase, const OpContext& ctx) {
    Lock lk(g_->mu);
    return Phase(s, phase, ctx, lk);
  }

  static absl::Status CheckFingerprints(const Slot& s, const OpContext& ctx,
                                        const std::string& group, bool compare_scopes) {
    bool same = true;
    for (const Fingerprint& f : s.fp) {
      same = same && f == s.fp[0] && (!compare_scopes || f.scope == s.fp[0].scope);
    }
    if (same) return absl::OkStatus();
    std::vector<std::string> calls;
    for (size_t j = 0; j < s.fp.size(); ++j) {
      calls.push_back(absl::StrCat("rank ", j, ": ", s.fp[j].ToString()));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("desync on group '", group, "' at seq ", ctx.fp.seq,
                     " (ranks called different collectives): ", absl::StrJoin(calls, "; ")));
  }

  // The skeleton of every collective: arrive (publish buffers and
  // fingerprint), check fingerprints, run `work` without the lock, optionally
  // wait until every rank is done with the others' buffers, leave.
  template <typename F>
  absl::Status Collective(const OpContext& ctx, const void* in, void* out, bool depart, F&& work,
                          int color = 0, int key = 0) {
    Lock lk(g_->mu);
    Slot& s = g_->slots.try_emplace(ctx.fp.seq, size()).first->second;
    if (!s.failed.ok()) return s.failed;
    s.fp[rank()] = ctx.fp;
    s.in[rank()] = in;
    s.out[rank()] = out;
    s.color[rank()] = color;
    s.key[rank()] = key;
    absl::Status st = Phase(s, 0, ctx, lk);
    // Phase 0 succeeded iff it completed (failures poison the slot before
    // anyone else can complete it): then this rank holds a reader slot.
    const bool reader = st.ok();
    if (st.ok()) st = CheckFingerprints(s, ctx, name(), options().check_desync);
    if (st.ok() && !s.failed.ok()) st = s.failed;  // another rank gave up meanwhile
    if (st.ok()) st = CheckAbort(*g_, ctx.Describe());
    if (st.ok()) {
      lk.unlock();
      st = work(s);
      lk.lock();
    }
    if (reader && --s.readers == 0) g_->cv.notify_all();
    if (st.ok() && depart) st = Phase(s, 2, ctx, lk);
    if (!st.ok() && reader) {
      // Leaving early (abort, timeout): ranks that passed phase 0 may still be
      // reading this rank's buffers, which its caller frees once we return.
      // They finish or give up promptly (their waits see the same abort or
      // failure), so wait for them.
      while (s.readers > 0) g_->cv.wait_for(lk, kPoll);
    }
    if (!s.failed.ok()) return st;  // poisoned: the slot stays, buffers untouched
    if (++s.left == size()) g_->slots.erase(ctx.fp.seq);
    return st;
  }

  std::shared_ptr<ThreadsGroup> g_;
  std::unique_ptr<internal::DataMover> mover_;  // worker thread only
  Device mover_device_ = Device::Cpu();
};

}  // namespace

ThreadsWorld::ThreadsWorld(int size, CommOptions options)
    : size_(size), options_(options), world_(std::make_shared<ThreadsGroup>()) {
  world_->name = "world";
  world_->abort = std::make_shared<internal::AbortState>();
  for (int r = 0; r < size; ++r) world_->world_ranks.push_back(r);
}

std::shared_ptr<ThreadsWorld> ThreadsWorld::Create(int size, CommOptions options) {
  return std::shared_ptr<ThreadsWorld>(new ThreadsWorld(size, options));
}

std::unique_ptr<Communicator> ThreadsWorld::Connect(int rank) {
  return std::make_unique<ThreadsCommunicator>(world_, rank, options_);
}

void ThreadsWorld::Abort(int rank, const absl::Status& reason) {
  {
    std::lock_guard<std::mutex> lock(world_->abort->mu);
    if (world_->abort->aborted) return;
    world_->abort->aborted = true;
    world_->abort->rank = rank;
    world_->abort->reason = reason;
  }
  // Waiters poll the abort flag every kPoll, in every group.
  world_->cv.notify_all();
}

absl::Status ThreadsWorld::abort_reason() const {
  std::lock_guard<std::mutex> lock(world_->abort->mu);
  if (!world_->abort->aborted) return absl::OkStatus();
  // One prefix per error: a reason that already names its rank (an error
  // agreed among the ranks, "rank 0: ...") keeps that one.
  absl::string_view msg = world_->abort->reason.message();
  int named = 0;
  if (absl::ConsumePrefix(&msg, "rank ")) {
    const size_t colon = msg.find(": ");
    if (colon != absl::string_view::npos && absl::SimpleAtoi(msg.substr(0, colon), &named)) {
      return world_->abort->reason;
    }
  }
  return Annotate(world_->abort->reason, absl::StrCat("rank ", world_->abort->rank));
}

absl::Status RunOnRanks(int world_size, const std::function<absl::Status(Communicator&)>& fn,
                        CommOptions options) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size must be >= 1, got ", world_size));
  }
  std::shared_ptr<ThreadsWorld> world = ThreadsWorld::Create(world_size, options);
  std::vector<std::thread> threads;
  threads.reserve(world_size);
  absl::Status not_started;
  for (int r = 0; r < world_size && not_started.ok(); ++r) {
    // A thread the system cannot start (or out of memory for its state)
    // aborts the world -- the started ranks return from their collectives --
    // instead of unwinding past joinable threads, which would terminate the
    // process. Inside a rank, everything (its communicator's construction
    // included) runs under the same catch.
    try {
      threads.emplace_back([&world, &fn, r] {
        absl::Status s;
        std::unique_ptr<Communicator> comm;  // outlives the Abort below
        try {
          comm = world->Connect(r);
          s = fn(*comm);
        } catch (const std::bad_alloc&) {
          s = absl::ResourceExhaustedError("out of memory");
        } catch (const std::system_error& e) {
          s = absl::ResourceExhaustedError(absl::StrCat("exception: ", e.what()));
        } catch (const std::exception& e) {
          s = absl::InternalError(absl::StrCat("exception: ", e.what()));
        } catch (...) {
          s = absl::InternalError("unknown exception");
        }
        if (!s.ok()) world->Abort(r, s);
      });
    } catch (const std::exception& e) {
      not_started = absl::ResourceExhaustedError(absl::StrCat(
          "could not start the thread of rank ", r, " of ", world_size, ": ", e.what()));
      world->Abort(r, not_started);
    }
  }
  for (std::thread& t : threads) t.join();
  return not_started.ok() ? world->abort_reason() : not_started;
}

}  // namespace trireme
