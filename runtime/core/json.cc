#include "runtime/core/json.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace trireme {
namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  explicit Parser(absl::string_view t) : t_(t) {}

  absl::StatusOr<Json> Document() {
    Json v;
    if (absl::Status s = Value(0, &v); !s.ok()) return s;
    SkipSpace();
    if (pos_ != t_.size()) return Error("trailing bytes after the JSON value");
    return v;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("JSON: ", what, " at byte ", pos_));
  }
  void SkipSpace() {
    while (pos_ < t_.size() &&
           (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Literal(absl::string_view word) {
    if (t_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  absl::Status Value(int depth, Json* out) {
    if (depth > kMaxDepth) return Error("nesting deeper than 64");
    SkipSpace();
    if (pos_ >= t_.size()) return Error("unexpected end of input");
    const char c = t_[pos_];
    if (c == '{') return ObjectValue(depth, out);
    if (c == '[') return ArrayValue(depth, out);
    if (c == '"') {
      std::string s;
      if (absl::Status st = String(&s); !st.ok()) return st;
      *out = Json(std::move(s));
      return absl::OkStatus();
    }
    if (Literal("true")) {
      *out = Json(true);
      return absl::OkStatus();
    }
    if (Literal("false")) {
      *out = Json(false);
      return absl::OkStatus();
    }
    if (Literal("null")) {
      *out = Json();
      return absl::OkStatus();
    }
    if (c == '-' || (c >= '0' && c <= '9')) return Number(out);
    return Error(absl::StrFormat("unexpected character 0x%02x", static_cast<unsigned char>(c)));
  }

  absl::Status ObjectValue(int depth, Json* out) {
    ++pos_;  // '{'
    *out = Json::Object();
    std::unordered_set<std::string> keys;
    SkipSpace();
    if (pos_ < t_.size() && t_[pos_] == '}') {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      SkipSpace();
      if (pos_ >= t_.size() || t_[pos_] != '"') return Error("expected a string key");
      std::string key;
      if (absl::Status s = String(&key); !s.ok()) return s;
      if (!keys.insert(key).second) return Error(absl::StrCat("duplicate key \"", key, "\""));
      SkipSpace();
      if (pos_ >= t_.size() || t_[pos_] != ':') return Error("expected ':'");
      ++pos_;
      Json v;
      if (absl::Status s = Value(depth + 1, &v); !s.ok()) return s;
      out->Set(std::move(key), std::move(v));
      SkipSpace();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == '}') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error("expected ',' or '}'");
    }
  }

  absl::Status ArrayValue(int depth, Json* out) {
    ++pos_;  // '['
    *out = Json::Array();
    SkipSpace();
    if (pos_ < t_.size() && t_[pos_] == ']') {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      Json v;
      if (absl::Status s = Value(depth + 1, &v); !s.ok()) return s;
      out->Push(std::move(v));
      SkipSpace();
      if (pos_ < t_.size() && t_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < t_.size() && t_[pos_] == ']') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error("expected ',' or ']'");
    }
  }

  static void AppendUtf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  absl::Status Hex4(uint32_t* v) {
    if (pos_ + 4 > t_.size()) return Error("truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = t_[pos_++];
      *v <<= 4;
      if (h >= '0' && h <= '9')
        *v |= h - '0';
      else if (h >= 'a' && h <= 'f')
        *v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F')
        *v |= h - 'A' + 10;
      else
        return Error("bad hex digit in \\u escape");
    }
    return absl::OkStatus();
  }

  absl::Status String(std::string* out) {
    ++pos_;  // '"'
    while (pos_ < t_.size()) {
      const char c = t_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= t_.size()) break;
      const char e = t_[pos_++];
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (absl::Status s = Hex4(&cp); !s.ok()) return s;
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            uint32_t lo = 0;
            if (!Literal("\\u")) return Error("unpaired surrogate");
            if (absl::Status s = Hex4(&lo); !s.ok()) return s;
            if (lo < 0xDC00 || lo >= 0xE000) return Error("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return Error("unpaired surrogate");
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return Error("bad escape in a string");
      }
    }
    return Error("unterminated string");
  }

  absl::Status Number(Json* out) {
    const size_t start = pos_;
    if (t_[pos_] == '-') ++pos_;
    const size_t digits = pos_;
    while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') ++pos_;
    if (pos_ == digits) return Error("a number needs digits");
    if (t_[digits] == '0' && pos_ - digits > 1) return Error("leading zero in a number");
    bool integral = true;
    if (pos_ < t_.size() && t_[pos_] == '.') {
      integral = false;
      ++pos_;
      const size_t f = pos_;
      while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') ++pos_;
      if (pos_ == f) return Error("a fraction needs digits");
    }
    if (pos_ < t_.size() && (t_[pos_] == 'e' || t_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < t_.size() && (t_[pos_] == '+' || t_[pos_] == '-')) ++pos_;
      const size_t e = pos_;
      while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') ++pos_;
      if (pos_ == e) return Error("an exponent needs digits");
    }
    const std::string text(t_.substr(start, pos_ - start));
    if (integral) {
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == ERANGE) return Error(absl::StrCat("integer ", text, " is outside int64"));
      *out = Json(static_cast<int64_t>(v));
      return absl::OkStatus();
    }
    const double d = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(d)) return Error(absl::StrCat("number ", text, " is not finite"));
    *out = Json(d);
    return absl::OkStatus();
  }

  absl::string_view t_;
  size_t pos_ = 0;
};

void DumpString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append(absl::StrFormat("\\u%04x", c));
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

void DumpTo(const Json& v, std::string* out) {
  switch (v.kind()) {
    case Json::Kind::kNull:
      out->append("null");
      break;
    case Json::Kind::kBool:
      out->append(v.bool_value() ? "true" : "false");
      break;
    case Json::Kind::kInt:
      absl::StrAppend(out, v.int_value());
      break;
    case Json::Kind::kDouble:
      out->append(absl::StrFormat("%.17g", v.number_value()));
      break;
    case Json::Kind::kString:
      DumpString(v.string_value(), out);
      break;
    case Json::Kind::kArray: {
      out->push_back('[');
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i > 0) out->push_back(',');
        DumpTo(v.items()[i], out);
      }
      out->push_back(']');
      break;
    }
    case Json::Kind::kObject: {
      out->push_back('{');
      for (size_t i = 0; i < v.members().size(); ++i) {
        if (i > 0) out->push_back(',');
        DumpString(v.members()[i].first, out);
        out->push_back(':');
        DumpTo(v.members()[i].second, out);
      }
      out->push_back('}');
      break;
    }
  }
}

}  // namespace

Json Json::Array(std::vector<Json> items) {
  Json j;
  j.kind_ = Kind::kArray;
  j.items_ = std::move(items);
  return j;
}

Json Json::Object(std::vector<Member> members) {
  Json j;
  j.kind_ = Kind::kObject;
  j.members_ = std::move(members);
  return j;
}

Json Json::IntArray(const std::vector<int64_t>& v) {
  Json j = Array();
  for (int64_t x : v) j.Push(Json(x));
  return j;
}

absl::StatusOr<Json> Json::Parse(absl::string_view text) { return Parser(text).Document(); }

std::string Json::Dump() const {
  std::string out;
  DumpTo(*this, &out);
  return out;
}

const Json* Json::Find(absl::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const Member& m : members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

namespace {
absl::Status Missing(absl::string_view key, absl::string_view where, absl::string_view type) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": \"", key, "\" is missing or not ", type));
}
}  // namespace

absl::StatusOr<int64_t> Json::GetInt(absl::string_view key, absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_int()) return Missing(key, where, "an integer");
  return v->int_value();
}

absl::StatusOr<double> Json::GetNumber(absl::string_view key, absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_number()) return Missing(key, where, "a number");
  return v->number_value();
}

absl::StatusOr<std::string> Json::GetString(absl::string_view key, absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_string()) return Missing(key, where, "a string");
  return v->string_value();
}

absl::StatusOr<const Json*> Json::GetObject(absl::string_view key, absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_object()) return Missing(key, where, "an object");
  return v;
}

absl::StatusOr<const Json*> Json::GetArray(absl::string_view key, absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_array()) return Missing(key, where, "an array");
  return v;
}

absl::StatusOr<std::vector<int64_t>> Json::GetIntArray(absl::string_view key,
                                                       absl::string_view where) const {
  const Json* v = Find(key);
  if (v == nullptr || !v->is_array()) return Missing(key, where, "an array of integers");
  std::vector<int64_t> out;
  for (const Json& x : v->items()) {
    if (!x.is_int()) return Missing(key, where, "an array of integers");
    out.push_back(x.int_value());
  }
  return out;
}

}  // namespace trireme
