#include "tests/runtime/comm/collective_suite.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/core/status.h"

namespace trireme::testing {
namespace {

float ValueAtImpl(int r, int64_t i) { return static_cast<float>((r + 1) * ((i % 5) + 1)) - 3.0f; }

// Storage for `count` elements of a float dtype.
struct Buf {
  Buf(DType d, int64_t n) : dtype(d), count(n), bytes(n * DTypeSize(d) + 1) {}
  DType dtype;
  int64_t count;
  std::vector<char> bytes;  // +1 so data() is never null
  void* data() { return bytes.data(); }
  MutView view() { return {data(), count, dtype}; }
  float get(int64_t i) const { return LoadAsF32(bytes.data(), dtype, i); }
  void set(int64_t i, float v) { StoreFromF32(bytes.data(), dtype, i, v); }
};

float RoundTo(DType d, float v) {
  float out;
  char tmp[4];
  StoreFromF32(tmp, d, 0, v);
  out = LoadAsF32(tmp, d, 0);
  return out;
}

bool Same(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

absl::Status Mismatch(const Communicator& c, const std::string& what, DType d, int64_t count,
                      int64_t i, float got, float want) {
  return absl::InternalError(absl::StrCat(what, " ", DTypeName(d), " count ", count, " on rank ",
                                          c.rank(), " of ", c.size(), ": element ", i, " is ", got,
                                          ", expected ", want));
}

absl::Status ExpectStats(const Communicator& c, CommOp op, int64_t calls, int64_t sent,
                         int64_t received) {
  const CommStats stats = c.stats();
  const CommStats::Op o = stats[op];
  if (o.calls != calls || o.bytes_sent != sent || o.bytes_received != received) {
    return absl::InternalError(
        absl::StrCat(CommOpName(op), " accounting on rank ", c.rank(), " of ", c.size(), ": calls ",
                     o.calls, " sent ", o.bytes_sent, " received ", o.bytes_received,
                     "; expected calls ", calls, " sent ", sent, " received ", received));
  }
  return absl::OkStatus();
}

}  // namespace

float ValueAt(int r, int64_t i) { return ValueAtImpl(r, i); }

absl::Status CheckCollectives(Communicator& comm, DType d, int64_t count) {
  const int n = comm.size();
  const int r = comm.rank();
  const int64_t es = DTypeSize(d);
  comm.ResetStats();

  // All-gather.
  {
    Buf send(d, count), recv(d, count * n);
    for (int64_t i = 0; i < count; ++i) send.set(i, ValueAt(r, i));
    RETURN_IF_ERROR(comm.AllGather(send.view(), recv.view()));
    for (int j = 0; j < n; ++j) {
      for (int64_t i = 0; i < count; ++i) {
        const float want = RoundTo(d, ValueAt(j, i));
        if (!Same(recv.get(j * count + i), want)) {
          return Mismatch(comm, "AllGather", d, count, j * count + i, recv.get(j * count + i),
                          want);
        }
      }
    }
    // In place: my block already sits at rank * count.
    for (int64_t i = 0; i < count; ++i) recv.set(r * count + i, ValueAt(r, i) + 1);
    MutView whole = recv.view();
    ConstView mine{static_cast<char*>(recv.data()) + r * count * es, count, d};
    RETURN_IF_ERROR(comm.AllGather(mine, whole));
    for (int64_t i = 0; i < count; ++i) {
      const float want = RoundTo(d, ValueAt(r, i) + 1);
      if (!Same(recv.get(r * count + i), want)) {
        return Mismatch(comm, "AllGather(in place)", d, count, i, recv.get(r * count + i), want);
      }
    }
    RETURN_IF_ERROR(ExpectStats(comm, CommOp::kAllGather, 2, 2 * (n - 1) * count * es,
                                2 * (n - 1) * count * es));
  }

  // Reduce-scatter, sum and avg.
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    Buf send(d, count * n), recv(d, count);
    for (int64_t k = 0; k < count * n; ++k) send.set(k, ValueAt(r, k));
    RETURN_IF_ERROR(comm.ReduceScatter(send.view(), recv.view(), op));
    for (int64_t i = 0; i < count; ++i) {
      float s = 0;
      for (int j = 0; j < n; ++j) s += RoundTo(d, ValueAt(j, r * count + i));
      const float want = RoundTo(d, op == ReduceOp::kAvg ? s / n : s);
      if (!Same(recv.get(i), want)) {
        return Mismatch(comm, absl::StrCat("ReduceScatter ", ReduceOpName(op)), d, count, i,
                        recv.get(i), want);
      }
    }
  }
  // In place: the result lands in this rank's own block of the input.
  {
    Buf buf(d, count * n);
    for (int64_t k = 0; k < count * n; ++k) buf.set(k, ValueAt(r, k));
    MutView mine{static_cast<char*>(buf.data()) + r * count * es, count, d};
    RETURN_IF_ERROR(comm.ReduceScatter(buf.view(), mine, ReduceOp::kSum));
    for (int64_t i = 0; i < count; ++i) {
      float s = 0;
      for (int j = 0; j < n; ++j) s += RoundTo(d, ValueAt(j, r * count + i));
      if (!Same(buf.get(r * count + i), RoundTo(d, s))) {
        return Mismatch(comm, "ReduceScatter(in place)", d, count, i, buf.get(r * count + i),
                        RoundTo(d, s));
      }
    }
  }
  RETURN_IF_ERROR(ExpectStats(comm, CommOp::kReduceScatter, 3, 3 * (n - 1) * count * es,
                              3 * (n - 1) * count * es));

  // All-reduce: sum, avg, max; the last one in place.
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    Buf send(d, count), recv(d, count);
    for (int64_t i = 0; i < count; ++i) send.set(i, ValueAt(r, i));
    const bool in_place = op == ReduceOp::kMax;
    MutView out = in_place ? send.view() : recv.view();
    RETURN_IF_ERROR(comm.AllReduce(send.view(), out, op));
    const Buf& result = in_place ? send : recv;
    for (int64_t i = 0; i < count; ++i) {
      float s = 0, m = -1e30f;
      for (int j = 0; j < n; ++j) {
        const float v = RoundTo(d, ValueAt(j, i));
        s += v;
        m = std::max(m, v);
      }
      const float want = RoundTo(d, op == ReduceOp::kSum ? s : op == ReduceOp::kAvg ? s / n : m);
      if (!Same(result.get(i), want)) {
        return Mismatch(comm, absl::StrCat("AllReduce ", ReduceOpName(op)), d, count, i,
                        result.get(i), want);
      }
    }
  }
  const int64_t ar_bytes = 3 * 2 * (count - RingSegment(count, n, r)) * es;
  RETURN_IF_ERROR(ExpectStats(comm, CommOp::kAllReduce, 3, ar_bytes, ar_bytes));

  // Broadcast from every root.
  int64_t bc_sent = 0, bc_recv = 0;
  for (int root = 0; root < n; ++root) {
    Buf buf(d, count);
    for (int64_t i = 0; i < count; ++i) buf.set(i, r == root ? ValueAt(root, i) : 99.0f);
    RETURN_IF_ERROR(comm.Broadcast(buf.view(), root));
    for (int64_t i = 0; i < count; ++i) {
      const float want = RoundTo(d, ValueAt(root, i));
      if (!Same(buf.get(i), want)) {
        return Mismatch(comm, absl::StrCat("Broadcast root ", root), d, count, i, buf.get(i), want);
      }
    }
    if (n > 1 && (r - root + n) % n != n - 1) bc_sent += count * es;
    if (r != root) bc_recv += count * es;
  }
  RETURN_IF_ERROR(ExpectStats(comm, CommOp::kBroadcast, n, bc_sent, bc_recv));

  // A ring of point-to-point transfers: everyone sends to the next rank.
  if (n > 1) {
    Buf out(d, count), in(d, count);
    for (int64_t i = 0; i < count; ++i) out.set(i, ValueAt(r, i));
    Work s = comm.SendAsync(out.view(), (r + 1) % n);
    RETURN_IF_ERROR(comm.Recv(in.view(), (r + n - 1) % n));
    RETURN_IF_ERROR(s.Wait());
    for (int64_t i = 0; i < count; ++i) {
      const float want = RoundTo(d, ValueAt((r + n - 1) % n, i));
      if (!Same(in.get(i), want)) return Mismatch(comm, "Send/Recv", d, count, i, in.get(i), want);
    }
    RETURN_IF_ERROR(ExpectStats(comm, CommOp::kSend, 1, count * es, 0));
    RETURN_IF_ERROR(ExpectStats(comm, CommOp::kRecv, 1, 0, count * es));
  }
  RETURN_IF_ERROR(comm.Barrier());
  return ExpectStats(comm, CommOp::kBarrier, 1, 0, 0);
}

absl::Status CheckIntegerAllReduce(Communicator& comm, int64_t count) {
  const int n = comm.size();
  const int r = comm.rank();
  std::vector<int64_t> a(count), b(count);
  std::vector<int32_t> c(count);
  for (int64_t i = 0; i < count; ++i) {
    a[i] = (int64_t{1} << 40) * (r + 1) + i;
    b[i] = a[i];
    c[i] = static_cast<int32_t>(r * 1000 + i);
  }
  RETURN_IF_ERROR(comm.AllReduce(ViewOf(a), ViewOf(a), ReduceOp::kSum));
  RETURN_IF_ERROR(comm.AllReduce(ViewOf(b), ViewOf(b), ReduceOp::kMax));
  RETURN_IF_ERROR(comm.AllReduce(ViewOf(c), ViewOf(c), ReduceOp::kSum));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t sum = (int64_t{1} << 40) * n * (n + 1) / 2 + n * i;
    const int64_t max = (int64_t{1} << 40) * n + i;
    const int32_t sum32 = static_cast<int32_t>(1000 * n * (n - 1) / 2 + n * i);
    if (a[i] != sum || b[i] != max || c[i] != sum32) {
      return absl::InternalError(absl::StrCat(
          "integer AllReduce on rank ", r, " element ", i, ": i64 sum ", a[i], " (want ", sum,
          "), i64 max ", b[i], " (want ", max, "), i32 sum ", c[i], " (want ", sum32, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTwoInFlight(Communicator& comm, int64_t count) {
  const int n = comm.size();
  const int r = comm.rank();
  std::vector<float> x(count), y(count * n), z(count);
  for (int64_t i = 0; i < count; ++i) x[i] = z[i] = ValueAt(r, i);
  Work w1 = comm.AllGatherAsync(ViewOf(x), ViewOf(y));
  Work w2 = comm.AllReduceAsync(ViewOf(z), ViewOf(z), ReduceOp::kSum);
  RETURN_IF_ERROR(w2.Wait());  // waiting out of order is fine
  RETURN_IF_ERROR(w1.Wait());
  if (!w1.Test() || !w2.Test()) return absl::InternalError("Test() false after Wait()");
  for (int64_t i = 0; i < count; ++i) {
    float s = 0;
    for (int j = 0; j < n; ++j) {
      s += ValueAt(j, i);
      if (y[j * count + i] != ValueAt(j, i)) {
        return Mismatch(comm, "async AllGather", DType::kF32, count, j * count + i,
                        y[j * count + i], ValueAt(j, i));
      }
    }
    if (z[i] != s) return Mismatch(comm, "async AllReduce", DType::kF32, count, i, z[i], s);
  }
  return absl::OkStatus();
}

}  // namespace trireme::testing
