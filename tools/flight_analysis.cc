#include "tools/flight_analysis.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/core/status.h"

namespace trireme {
namespace {

const CommOp kOps[] = {CommOp::kAllGather, CommOp::kReduceScatter, CommOp::kAllReduce,
                       CommOp::kBroadcast, CommOp::kSend,          CommOp::kRecv,
                       CommOp::kBarrier,   CommOp::kSplit};

bool ParseOp(absl::string_view s, CommOp* op) {
  for (CommOp o : kOps) {
    if (s == CommOpName(o)) {
      *op = o;
      return true;
    }
  }
  return false;
}

bool ParseDType(absl::string_view s, DType* d) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8}) {
    if (s == DTypeName(t)) {
      *d = t;
      return true;
    }
  }
  return false;
}

bool ParseReduce(absl::string_view s, ReduceOp* r) {
  for (ReduceOp o : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    if (s == ReduceOpName(o)) {
      *r = o;
      return true;
    }
  }
  return false;
}

bool IsP2p(CommOp op) { return op == CommOp::kSend || op == CommOp::kRecv; }

// "AllReduce(f32, count 8, sum)": no seq, no scope (what ranks must agree on).
std::string CallName(const Fingerprint& f) {
  Fingerprint g = f;
  g.scope[0] = '\0';
  std::string s = g.ToString();
  return s.substr(0, s.rfind(" seq "));
}

// The call with its scope, for messages.
std::string Described(const Fingerprint& f) {
  std::string s = CallName(f);
  if (f.scope[0] != '\0') absl::StrAppend(&s, " [", f.scope.data(), "]");
  return s;
}

}  // namespace

absl::StatusOr<std::vector<FlightEntry>> ReadFlightDump(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::string line;
  int world_rank = -1;
  std::string run;
  int64_t dumped_us = 0;
  std::vector<FlightEntry> out;
  int n = 0;
  auto field = [&](const std::string& l, const std::string& key) -> std::string {
    const size_t at = l.find(key + " ");
    if (at == std::string::npos) return "";
    const size_t b = at + key.size() + 1;
    return l.substr(b, l.find('\t', b) - b);
  };
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (line.find("world_rank ") != std::string::npos) {
        if (!absl::SimpleAtoi(field(line, "world_rank"), &world_rank)) world_rank = -1;
        run = field(line, "run");
        if (!absl::SimpleAtoi(field(line, "dumped_us"), &dumped_us)) dumped_us = 0;
      }
      continue;
    }
    const std::vector<std::string> f = absl::StrSplit(line, '\t');
    FlightEntry e;
    int64_t seq = 0;
    bool ok = f.size() >= 13 && world_rank >= 0;
    if (ok) {
      e.group = f[0];
      ok = absl::SimpleAtoi(f[1], &e.group_rank) && absl::SimpleAtoi(f[2], &e.group_size) &&
           ParseOp(f[3], &e.fp.op) && ParseDType(f[4], &e.fp.dtype) &&
           absl::SimpleAtoi(f[5], &e.fp.count) && ParseReduce(f[6], &e.fp.reduce) &&
           absl::SimpleAtoi(f[7], &e.fp.root) && absl::SimpleAtoi(f[8], &seq) &&
           absl::SimpleAtoi(f[10], &e.issued_us) && absl::SimpleAtoi(f[11], &e.started_us) &&
           absl::SimpleAtoi(f[12], &e.ended_us);
      e.fp.seq = static_cast<uint64_t>(seq);
      const std::string& st = f[9];
      e.state = st == "done"      ? FlightEntry::State::kDone
                : st == "failed"  ? FlightEntry::State::kFailed
                : st == "started" ? FlightEntry::State::kStarted
                                  : FlightEntry::State::kQueued;
      if (f.size() > 13) {
        const size_t n = std::min(f[13].size(), e.fp.scope.size() - 1);
        std::copy(f[13].begin(), f[13].begin() + n, e.fp.scope.begin());
        e.fp.scope[n] = '\0';
      }
      if (f.size() > 14) e.error = f[14];
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "' line ", n, " is not a flight-recorder entry"));
    }
    e.world_rank = world_rank;
    e.run = run;
    e.dumped_us = dumped_us;
    out.push_back(std::move(e));
  }
  if (world_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' has no flight-recorder header"));
  }
  return out;
}

namespace {

// The dumps of the newest job under a directory.
struct Dumps {
  std::vector<FlightEntry> all;  // the newest run's entries
  std::set<int> ranks;           // world ranks with a dump of that run
  std::set<int> stale;           // world ranks whose dump is of an earlier run
  std::string run;
};

absl::StatusOr<Dumps> ReadNewestRun(const std::string& dir) {
  Dumps d;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = f.path().filename().string();
    if (name.rfind("flight-rank-", 0) != 0 || f.path().extension() != ".txt") continue;
    auto entries = ReadFlightDump(f.path().string());
    if (!entries.ok()) return entries.status();
    for (FlightEntry& e : *entries) d.all.push_back(std::move(e));
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list '", dir, "': ", ec.message()));
  // Only the newest job's dumps: files left by earlier runs would mislead.
  int64_t newest = -1;
  for (const FlightEntry& e : d.all) {
    if (e.dumped_us > newest) {
      newest = e.dumped_us;
      d.run = e.run;
    }
  }
  for (const FlightEntry& e : d.all) {
    if (e.run != d.run) d.stale.insert(e.world_rank);
  }
  d.all.erase(std::remove_if(d.all.begin(), d.all.end(),
                             [&](const FlightEntry& e) { return e.run != d.run; }),
              d.all.end());
  for (const FlightEntry& e : d.all) d.ranks.insert(e.world_rank);
  if (d.all.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no flight-rank-*.txt dumps with entries in '", dir, "'"));
  }
  return d;
}

struct Finding {
  int64_t when;
  std::string text;
};

// One group's record: its members (group rank -> world rank) and their calls.
struct Group {
  std::string name;
  int size = 0;
  std::map<int, int> members;
  std::map<int, std::vector<const FlightEntry*>> calls;
  std::string Who(int gr) const {
    auto it = members.find(gr);
    return absl::StrCat(gr, " (world ", it == members.end() ? 0 : it->second, ")");
  }
};

// The first collective (by sequence number) that members called
// differently, or that some members never issued.
std::optional<Finding> CollectiveDivergence(const Group& g, const std::set<int>& ranks_with_dump) {
  // Collectives by sequence number.
  std::map<int, std::map<uint64_t, const FlightEntry*>> coll;
  std::map<int, std::pair<uint64_t, uint64_t>> window;  // first/last seq recorded
  for (const auto& [gr, list] : g.calls) {
    for (const FlightEntry* e : list) {
      if (IsP2p(e->fp.op)) continue;
      coll[gr][e->fp.seq] = e;
    }
    if (!coll[gr].empty()) window[gr] = {coll[gr].begin()->first, coll[gr].rbegin()->first};
  }
  std::set<uint64_t> seqs;
  for (const auto& [gr, m] : coll) {
    for (const auto& [seq, e] : m) seqs.insert(seq);
  }
  for (uint64_t seq : seqs) {
    std::map<std::string, std::vector<int>> variants;
    std::vector<int> missing;
    int64_t when = INT64_MAX;
    const FlightEntry* any = nullptr;
    for (int gr = 0; gr < g.size; ++gr) {
      auto it = coll.find(gr);
      if (it == coll.end() || it->second.empty()) {
        auto m = g.members.find(gr);
        if (ranks_with_dump.count(m != g.members.end() ? m->second : -1) == 0) {
          continue;  // no record of this member at all
        }
        missing.push_back(gr);
        continue;
      }
      auto c = it->second.find(seq);
      if (c == it->second.end()) {
        if (seq > window[gr].second) missing.push_back(gr);  // older ones may be evicted
        continue;
      }
      variants[CallName(c->second->fp)].push_back(gr);
      when = std::min(when, c->second->issued_us);
      any = c->second;
    }
    if (variants.size() > 1) {
      std::vector<std::string> parts;
      for (const auto& [call, grs] : variants) {
        std::vector<std::string> names;
        for (int gr : grs) {
          const FlightEntry* e = coll[gr][seq];
          names.push_back(e->fp.scope[0] != '\0'
                              ? absl::StrCat(g.Who(gr), " [", e->fp.scope.data(), "]")
                              : g.Who(gr));
        }
        parts.push_back(absl::StrCat(call, " on ranks ", absl::StrJoin(names, ", ")));
      }
      return Finding{
          when, absl::StrCat("group '", g.name, "' seq ", seq,
                             ": ranks called different collectives: ", absl::StrJoin(parts, "; "))};
    }
    if (!missing.empty() && any != nullptr) {
      std::vector<std::string> have, lacks;
      for (const auto& [call, grs] : variants) {
        for (int gr : grs) have.push_back(g.Who(gr));
      }
      for (int gr : missing) {
        std::string last = "no call on this group recorded";
        auto it = coll.find(gr);
        if (it != coll.end() && !it->second.empty()) {
          const FlightEntry* l = it->second.rbegin()->second;
          last = absl::StrCat("last called seq ", l->fp.seq, " ", Described(l->fp), " (",
                              FlightStateName(l->state), ")");
        }
        lacks.push_back(absl::StrCat(g.Who(gr), ": ", last));
      }
      return Finding{when, absl::StrCat("group '", g.name, "' seq ", seq, ": ", Described(any->fp),
                                        " was issued by ranks ", absl::StrJoin(have, ", "),
                                        " but never by ranks ", absl::StrJoin(lacks, "; "))};
    }
  }
  return std::nullopt;
}

// Per receiving member, its first receive whose message was never sent (when the sender's record
// covers it: its newest send to the receiver is older, or its ring reaches back before the
// receive).
std::vector<Finding> UnsentReceives(const Group& g) {
  std::vector<Finding> found;
  for (const auto& [gr, list] : g.calls) {
    for (const FlightEntry* e : list) {
      if (e->fp.op != CommOp::kRecv || e->state == FlightEntry::State::kDone) continue;
      const int peer = static_cast<int>(e->fp.root);
      bool sent = false, covered = false;
      auto it = g.calls.find(peer);
      if (it != g.calls.end() && !it->second.empty()) {
        int64_t newest_send = -1;
        for (const FlightEntry* s : it->second) {
          if (s->fp.op != CommOp::kSend || s->fp.root != gr) continue;
          sent = sent || s->fp.seq == e->fp.seq;
          newest_send = std::max<int64_t>(newest_send, static_cast<int64_t>(s->fp.seq));
        }
        covered = newest_send >= 0 ? static_cast<int64_t>(e->fp.seq) > newest_send
                                   : it->second.front()->issued_us <= e->issued_us;
      }
      if (covered && !sent) {
        found.push_back(
            {e->issued_us,
             absl::StrCat("group '", g.name, "': rank ", g.Who(gr), " waits for message ",
                          e->fp.seq, " from rank ", g.Who(peer), ", which never sent it (",
                          Described(e->fp), ", ", FlightStateName(e->state), ")")});
        break;
      }
    }
  }
  return found;
}

std::string Report(const Dumps& d, std::vector<Finding> findings) {
  std::sort(findings.begin(), findings.end(),
            [](const Finding& a, const Finding& b) { return a.when < b.when; });
  std::string out =
      absl::StrCat("flight recorder dumps of world ranks ", absl::StrJoin(d.ranks, ", "), " (run ",
                   d.run, ", ", d.all.size(), " operations)\n");
  if (!d.stale.empty()) {
    absl::StrAppend(&out, "ignored: dumps of world ranks ", absl::StrJoin(d.stale, ", "),
                    " from an earlier run\n");
  }
  if (findings.empty()) {
    absl::StrAppend(&out,
                    "no divergence found: every recorded call was issued by every member "
                    "with the same signature\n");
    return out;
  }
  absl::StrAppend(&out, "first divergence: ", findings[0].text, "\n");
  for (size_t i = 1; i < findings.size(); ++i) {
    absl::StrAppend(&out, "then: ", findings[i].text, "\n");
  }
  // Where each rank was when it dumped: its unfinished calls.
  std::map<int, std::vector<std::string>> waiting;
  for (const FlightEntry& e : d.all) {
    if (e.state == FlightEntry::State::kDone) continue;
    waiting[e.world_rank].push_back(absl::StrCat("group '", e.group, "' seq ", e.fp.seq, " ",
                                                 Described(e.fp), " (", FlightStateName(e.state),
                                                 ")"));
  }
  for (int r : d.ranks) {
    auto it = waiting.find(r);
    absl::StrAppend(&out, "world rank ", r, ": ",
                    it == waiting.end() ? "nothing unfinished"
                                        : absl::StrCat("in ", absl::StrJoin(it->second, "; ")),
                    "\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> AnalyzeFlightDumps(const std::string& dir) {
  ASSIGN_OR_RETURN(const Dumps d, ReadNewestRun(dir));
  std::map<std::string, Group> groups;
  for (const FlightEntry& e : d.all) {
    Group& g = groups[e.group];
    g.name = e.group;
    g.size = e.group_size;
    g.members[e.group_rank] = e.world_rank;
    g.calls[e.group_rank].push_back(&e);
  }
  std::vector<Finding> findings;
  for (const auto& [name, g] : groups) {
    if (std::optional<Finding> f = CollectiveDivergence(g, d.ranks)) findings.push_back(*f);
    for (Finding& f : UnsentReceives(g)) findings.push_back(std::move(f));
  }
  return Report(d, std::move(findings));
}

}  // namespace trireme
