// A small, strict JSON value: checkpoint manifests and safetensors headers,
// and every JSON the runtime, tools and benchmarks write (strings escaped); parsing rejects
// anything malformed or ambiguous (duplicate keys, trailing bytes, nesting deeper than 64, integers
// outside int64) with the byte offset, and never allocates more than a constant times the input.
// Objects keep their key order; Dump() writes compact JSON that Parse reads
// back to an equal value.
#ifndef TRIREME_RUNTIME_CORE_JSON_H_
#define TRIREME_RUNTIME_CORE_JSON_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace trireme {

class Json {
 public:
  enum class Kind { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  using Member = std::pair<std::string, Json>;

  Json() = default;                                                // null
  Json(bool b) : kind_(Kind::kBool), b_(b) {}                      // NOLINT
  Json(int v) : kind_(Kind::kInt), i_(v) {}                        // NOLINT
  Json(int64_t v) : kind_(Kind::kInt), i_(v) {}                    // NOLINT
  Json(double v) : kind_(Kind::kDouble), d_(v) {}                  // NOLINT
  Json(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}  // NOLINT
  Json(const char* s) : kind_(Kind::kString), s_(s) {}             // NOLINT
  static Json Array(std::vector<Json> items = {});
  static Json Object(std::vector<Member> members = {});
  static Json IntArray(const std::vector<int64_t>& v);

  // Parses one JSON document (surrounding whitespace allowed).
  static absl::StatusOr<Json> Parse(absl::string_view text);
  std::string Dump() const;

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kDouble; }
  bool is_bool() const { return kind_ == Kind::kBool; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return i_; }
  double number_value() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : d_; }
  const std::string& string_value() const { return s_; }
  const std::vector<Json>& items() const { return items_; }
  const std::vector<Member>& members() const { return members_; }

  // Object member by key (nullptr if absent or not an object).
  const Json* Find(absl::string_view key) const;
  // Appends to an array / object (no duplicate check on Set: callers build
  // objects with distinct keys; Parse checks input).
  void Push(Json v) { items_.push_back(std::move(v)); }
  void Set(std::string key, Json v) { members_.emplace_back(std::move(key), std::move(v)); }

  // Typed accessors of object members for validation: NotFound /
  // InvalidArgument naming `where` and the key.
  absl::StatusOr<int64_t> GetInt(absl::string_view key, absl::string_view where) const;
  absl::StatusOr<double> GetNumber(absl::string_view key, absl::string_view where) const;
  absl::StatusOr<std::string> GetString(absl::string_view key, absl::string_view where) const;
  absl::StatusOr<const Json*> GetObject(absl::string_view key, absl::string_view where) const;
  absl::StatusOr<const Json*> GetArray(absl::string_view key, absl::string_view where) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key,
                                                   absl::string_view where) const;

 private:
  Kind kind_ = Kind::kNull;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Json> items_;
  std::vector<Member> members_;
};

}  // namespace trireme

#endif  // TRIREME_RUNTIME_CORE_JSON_H_
