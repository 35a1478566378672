// What every rank holds, per category, measured by the runtime's MemoryTracker
// -- for real runs (ranks as threads) and for simulated clusters far larger
// than this machine (the same engine on the meta device) -- next to the ZeRO
// paper's formula, with "will it fit?" against a device size.
//
//   ./bazelw run //bench:memory_footprint
//   ./bazelw run //bench:memory_footprint -- --model=llama-70b --dp=8,64,512 --device_memory=80GiB
//   ./bazelw run //bench:memory_footprint -- --json
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/footprint.h"
#include "runtime/core/json.h"
#include "runtime/core/status.h"

ABSL_FLAG(std::string, model, "tiny,gpt2-124m,7.5b,175b",
          "models (comma-separated): tiny, gpt2-124m, gpt2-350m, gpt2-774m, gpt2-1.5b, "
          "llama-7b, llama-13b, llama-70b (the model library's architectures), 175b, 7.5b, or a "
          "parameter count such as 3e9");
ABSL_FLAG(std::string, stages, "0,1,2,3", "ZeRO stages");
ABSL_FLAG(std::string, dp, "1,2,4,8,64,1024", "data-parallel degrees");
ABSL_FLAG(std::string, mode, "auto",
          "real (ranks as threads, real buffers), simulated (meta device), or auto: real for "
          "runs of at most --real_max_bytes in total, simulated otherwise");
ABSL_FLAG(std::string, real_max_bytes, "2GiB", "auto mode: largest real run (all ranks)");
ABSL_FLAG(std::string, compute_dtype, "bf16", "compute copy dtype");
ABSL_FLAG(std::string, grad_dtype, "bf16", "gradient dtype (f32 gives the 18-byte row)");
ABSL_FLAG(std::string, device_memory, "80GiB", "device size for the fit column (0: off)");
ABSL_FLAG(bool, json, false, "print JSON instead of tables");
ABSL_FLAG(std::string, svg, "memory_footprint.svg",
          "chart of bytes per rank against dp, one line per stage (empty: none)");

namespace trireme::bench {
namespace {

absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  std::string t = text;
  double scale = 1;
  for (auto [suffix, s] : std::vector<std::pair<std::string, double>>{{"GiB", 1 << 30},
                                                                      {"MiB", 1 << 20},
                                                                      {"KiB", 1 << 10},
                                                                      {"GB", 1e9},
                                                                      {"MB", 1e6},
                                                                      {"TB", 1e12},
                                                                      {"TiB", 1099511627776.0}}) {
    if (t.size() > suffix.size() && t.substr(t.size() - suffix.size()) == suffix) {
      t = t.substr(0, t.size() - suffix.size());
      scale = s;
      break;
    }
  }
  double v;
  if (!absl::SimpleAtod(t, &v) || v < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a size (e.g. 80GiB, 40GB, 512MiB)"));
  }
  return static_cast<int64_t>(v * scale);
}

absl::StatusOr<std::vector<int>> ParseInts(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", part, "' is not a number"));
    }
    out.push_back(v);
  }
  return out;
}

struct Row {
  std::string model;
  FootprintConfig config;
  Footprint f;
};

std::string Gb(double bytes) { return absl::StrFormat("%.2f GB", bytes / 1e9); }

// 10^k bytes in decimal units: "1 KB", "10 GB", "100 TB".
std::string PowerOfTen(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  int k = static_cast<int>(std::lround(std::log10(bytes)));
  const int u = std::min(5, k / 3);
  return absl::StrCat(static_cast<int>(std::lround(std::pow(10, k - 3 * u))), " ", units[u]);
}

// {"rows":[...]}: one row per line, through the runtime's JSON writer.
std::string RowsJson(const std::vector<Row>& rows, int64_t device) {
  auto pair = [](int64_t current, int64_t peak) {
    return Json::Object({{"current", Json(current)}, {"peak", Json(peak)}});
  };
  std::vector<std::string> items;
  for (const Row& r : rows) {
    Json cats = Json::Object();
    for (int c = 0; c < kNumMemCategories; ++c) {
      cats.Set(MemCategoryName(static_cast<MemCategory>(c)),
               pair(r.f.memory.current[c], r.f.memory.peak[c]));
    }
    Json row = Json::Object({{"model", Json(r.model)},
                             {"mode", Json(r.config.simulated ? "simulated" : "real")},
                             {"stage", Json(r.config.stage)},
                             {"dp", Json(r.config.dp)},
                             {"params", Json(r.f.psi_unpadded)},
                             {"params_padded", Json(r.f.psi)},
                             {"categories", std::move(cats)},
                             {"total", pair(r.f.memory.total_current, r.f.memory.total_peak)},
                             {"model_states", Json(r.f.model_states())},
                             {"formula", Json(r.f.formula)},
                             {"ratio", Json(r.f.model_states() / r.f.formula)},
                             {"sent_per_step", Json(r.f.sent_per_step)}});
    if (device > 0) {
      row.Set("device_memory", Json(device));
      row.Set("fits", Json(r.f.memory.total_peak <= device));
    }
    items.push_back(row.Dump());
  }
  return absl::StrCat("{\"rows\":[\n", absl::StrJoin(items, ",\n"), "\n]}\n");
}

// Bytes per rank (log) against dp (log), one polyline per stage, per model.
std::string Svg(const std::vector<Row>& rows, int64_t device) {
  const int W = 820, H = 480, L = 70, R = 200, T = 44, B = 60;
  double xmin = 1e300, xmax = 0, ymin = 1e300, ymax = 0;
  for (const Row& r : rows) {
    xmin = std::min(xmin, double(r.config.dp));
    xmax = std::max(xmax, double(r.config.dp));
    ymin = std::min(ymin, double(r.f.memory.total_peak));
    ymax = std::max(ymax, double(r.f.memory.total_peak));
  }
  if (rows.empty()) return "";
  if (device > 0) {
    ymin = std::min(ymin, double(device));
    ymax = std::max(ymax, double(device));
  }
  xmax = std::max(xmax, xmin * 2);
  ymin = std::pow(10, std::floor(std::log10(std::max(ymin, 1.0))));
  ymax = std::pow(10, std::ceil(std::log10(std::max(ymax, 10.0))));
  auto X = [&](double v) { return L + (W - L - R) * std::log(v / xmin) / std::log(xmax / xmin); };
  auto Y = [&](double v) {
    return H - B - (H - T - B) * std::log(v / ymin) / std::log(ymax / ymin);
  };
  std::string s = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif' "
      "font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n"
      "<text x='%d' y='22' font-size='15'>Peak bytes per rank (MemoryTracker) against dp</text>\n",
      W, H, L);
  for (double y = ymin; y <= ymax * 1.001; y *= 10) {
    absl::StrAppendFormat(&s,
                          "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#ddd'/>"
                          "<text x='%d' y='%.1f' text-anchor='end'>%s</text>\n",
                          L, W - R, Y(y), Y(y), L - 6, Y(y) + 4, PowerOfTen(y));
  }
  for (double x = xmin; x <= xmax * 1.001; x *= 2) {
    absl::StrAppendFormat(&s, "<text x='%.1f' y='%d' text-anchor='middle'>%.0f</text>\n", X(x),
                          H - B + 18, x);
  }
  absl::StrAppendFormat(&s, "<text x='%d' y='%d' text-anchor='middle'>dp (ranks)</text>\n",
                        (L + W - R) / 2, H - 18);
  if (device > 0) {
    absl::StrAppendFormat(&s,
                          "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='red' "
                          "stroke-dasharray='6,4'/><text x='%d' y='%.1f' fill='red'>device "
                          "memory %s</text>\n",
                          L, W - R, Y(device), Y(device), L + 6, Y(device) - 5,
                          FormatBytes(device));
  }
  const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"};
  const char* dashes[] = {"", "6,3", "2,3", "8,3,2,3"};
  int legend = 0, model_index = 0;
  std::string last_model;
  for (size_t i = 0; i < rows.size();) {
    const Row& first = rows[i];
    if (first.model != last_model) {
      last_model = first.model;
      ++model_index;
    }
    std::string pts;
    size_t j = i;
    for (; j < rows.size() && rows[j].model == first.model &&
           rows[j].config.stage == first.config.stage;
         ++j) {
      absl::StrAppendFormat(&pts, "%.1f,%.1f ", X(rows[j].config.dp),
                            Y(double(rows[j].f.memory.total_peak)));
    }
    const char* color = colors[first.config.stage % 4];
    const char* dash = dashes[(model_index - 1) % 4];
    const int ly = T + 16 * legend;
    absl::StrAppendFormat(
        &s,
        "<polyline fill='none' stroke='%s' stroke-width='2' stroke-dasharray='%s' "
        "points='%s'/>\n<line x1='%d' x2='%d' y1='%d' y2='%d' stroke='%s' stroke-width='2' "
        "stroke-dasharray='%s'/><text x='%d' y='%d'>%s, stage %d</text>\n",
        color, dash, pts, W - R + 8, W - R + 36, ly - 4, ly - 4, color, dash, W - R + 42, ly,
        first.model, first.config.stage);
    ++legend;
    i = j;
  }
  return s + "</svg>\n";
}

absl::Status Main() {
  ASSIGN_OR_RETURN(std::vector<int> stages, ParseInts("stages", absl::GetFlag(FLAGS_stages)));
  ASSIGN_OR_RETURN(std::vector<int> dps, ParseInts("dp", absl::GetFlag(FLAGS_dp)));
  ASSIGN_OR_RETURN(int64_t device, ParseBytes(absl::GetFlag(FLAGS_device_memory)));
  ASSIGN_OR_RETURN(int64_t real_max, ParseBytes(absl::GetFlag(FLAGS_real_max_bytes)));
  ASSIGN_OR_RETURN(DType compute, ParseDType(absl::GetFlag(FLAGS_compute_dtype)));
  ASSIGN_OR_RETURN(DType grad, ParseDType(absl::GetFlag(FLAGS_grad_dtype)));
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "auto" && mode != "real" && mode != "simulated") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode=", mode, ": use auto, real or simulated"));
  }
  for (int s : stages) {
    if (s < 0 || s > 3) return absl::InvalidArgumentError(absl::StrCat("stage ", s, " is not 0-3"));
  }
  const bool json = absl::GetFlag(FLAGS_json);
  std::vector<Row> rows;
  const absl::Time start = absl::Now();
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_model), ',', absl::SkipEmpty())) {
    ASSIGN_OR_RETURN(ModelShape m, ModelByName(std::string(name)));
    const int64_t psi = ParamCount(m);
    if (!json) {
      printf("\n%s: %s parameters (%.3g), %s compute, %s gradients, fp32 master and Adam m, v\n",
             m.name.c_str(), absl::StrFormat("%d", psi).c_str(), double(psi), DTypeName(compute),
             DTypeName(grad));
      printf("%-9s %5s %6s %11s %11s %11s %11s %11s %11s %11s %7s %s\n", "mode", "stage", "dp",
             "param", "grad", "master", "optim", "comm peak", "states", "formula", "ratio",
             device > 0 ? absl::StrCat("peak total, fits in ", FormatBytes(device), "?").c_str()
                        : "peak total");
    }
    for (int stage : stages) {
      for (int dp : dps) {
        FootprintConfig c{stage, dp, compute, grad, true};
        const double real_bytes = ZeroFormulaBytes(0, double(psi), 1, DTypeSize(grad)) * dp;
        c.simulated = mode == "simulated" || (mode == "auto" && real_bytes > double(real_max));
        ASSIGN_OR_RETURN(Footprint f, Measure(m, c));
        rows.push_back({m.name, c, f});
        if (json) continue;
        const auto& cur = f.memory.current;
        auto at = [&](MemCategory k) { return Gb(double(cur[static_cast<int>(k)])); };
        std::string fit;
        if (device > 0) {
          const int64_t peak = f.memory.total_peak;
          fit = peak <= device ? absl::StrCat("fits (", Gb(double(device - peak)), " free)")
                               : absl::StrCat("does NOT fit, short by ", Gb(double(peak - device)));
        }
        printf("%-9s %5d %6d %11s %11s %11s %11s %11s %11s %11s %7.4f %s %s\n",
               c.simulated ? "simulated" : "real", stage, dp, at(MemCategory::kParam).c_str(),
               at(MemCategory::kGrad).c_str(), at(MemCategory::kMaster).c_str(),
               at(MemCategory::kOptim).c_str(),
               Gb(double(f.memory.peak[static_cast<int>(MemCategory::kComm)])).c_str(),
               Gb(double(f.model_states())).c_str(), Gb(f.formula).c_str(),
               f.model_states() / f.formula, Gb(double(f.memory.total_peak)).c_str(), fit.c_str());
      }
    }
  }
  if (json) {
    printf("%s", RowsJson(rows, device).c_str());
  } else {
    printf(
        "\nstates = param + grad + master + optim held after a step (measured); formula = the "
        "ZeRO paper's bytes for the unpadded count;\nratio > 1 is padding (< dp elements per "
        "unit). These are the engine's states over DP alone; with tensor and pipeline "
        "parallelism and activations\n(the trainer's own accounting per pipeline position), "
        "see //tools:plan. %.1f s.\n",
        absl::ToDoubleSeconds(absl::Now() - start));
  }
  const std::string svg = absl::GetFlag(FLAGS_svg);
  if (!svg.empty() && !rows.empty()) {
    std::string path = svg;
    if (const char* wd = std::getenv("BUILD_WORKING_DIRECTORY"); wd && path[0] != '/') {
      path = absl::StrCat(wd, "/", path);
    }
    std::ofstream out(path);
    out << Svg(rows, device);
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write the chart to ", path));
    fprintf(json ? stderr : stdout, "chart: %s\n", path.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace trireme::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status s = trireme::bench::Main();
  if (!s.ok()) {
    fprintf(stderr, "memory_footprint: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
