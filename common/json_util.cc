#include "common/json_util.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

using json = nlohmann::json;

// The deepest nesting of arrays and objects in `text`, stopping early once
// past `limit`; strings (with escapes) are skipped.
int NestingDepth(absl::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

absl::Status FieldError(absl::string_view what, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": field '", field, "' ", problem));
}

}  // namespace

absl::Status CheckJsonText(absl::string_view text, absl::string_view what, int max_depth) {
  const size_t nul = text.find('\0');
  if (nul != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not valid JSON: a NUL byte at offset ", nul));
  }
  if (NestingDepth(text, max_depth) > max_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nested deeper than ", max_depth, " levels"));
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseJson(absl::string_view text, absl::string_view what, int max_depth) {
  absl::Status checked = CheckJsonText(text, what, max_depth);
  if (!checked.ok()) return checked;
  json value = json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    // Ask again with exceptions for the position and reason; the depth is
    // bounded, so this cannot recurse deeply.
    try {
      [[maybe_unused]] const json again = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  }
  return value;
}

const char* JsonTypeName(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "number";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

std::string DescribeJson(const json& value) {
  if (value.is_object()) return "an object";
  if (value.is_array()) return "an array";
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (s.size() <= 40) return absl::StrCat("\"", s, "\"");
    return absl::StrCat("\"", s.substr(0, 40), "...\"");
  }
  return value.dump();  // a scalar: no recursion
}

absl::StatusOr<int64_t> JsonToInt(const json& value, absl::string_view what,
                                  absl::string_view field, int64_t min, int64_t max) {
  if (!value.is_number_integer()) {
    return FieldError(what, field, absl::StrCat("must be an integer, got ", DescribeJson(value)));
  }
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    // nlohmann stores every non-negative literal as unsigned: check both ends.
    if (max < 0 || u > static_cast<uint64_t>(max) ||
        (min > 0 && u < static_cast<uint64_t>(min))) {
      return FieldError(what, field, absl::StrCat("is out of range [", min, ", ", max, "]: ", u));
    }
    return static_cast<int64_t>(u);
  }
  const int64_t v = value.get<int64_t>();
  if (v < min || v > max) {
    return FieldError(what, field, absl::StrCat("is out of range [", min, ", ", max, "]: ", v));
  }
  return v;
}

absl::StatusOr<double> JsonToDouble(const json& value, absl::string_view what,
                                    absl::string_view field, double min, double max) {
  if (!value.is_number()) {
    return FieldError(what, field, absl::StrCat("must be a number, got ", DescribeJson(value)));
  }
  const double v = value.get<double>();
  if (!std::isfinite(v) || v < min || v > max) {
    return FieldError(what, field, absl::StrCat("is out of range [", min, ", ", max, "]: ", v));
  }
  return v;
}

namespace {
const json* Find(const json& object, absl::string_view field) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(std::string(field));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}
}  // namespace

absl::StatusOr<int64_t> GetInt(const json& object, absl::string_view field, absl::string_view what,
                               int64_t min, int64_t max) {
  const json* v = Find(object, field);
  if (v == nullptr) return FieldError(what, field, "is missing");
  return JsonToInt(*v, what, field, min, max);
}

absl::StatusOr<int64_t> GetInt(const json& object, absl::string_view field, absl::string_view what,
                               int64_t min, int64_t max, int64_t fallback) {
  const json* v = Find(object, field);
  if (v == nullptr) return fallback;
  return JsonToInt(*v, what, field, min, max);
}

absl::StatusOr<double> GetDouble(const json& object, absl::string_view field,
                                 absl::string_view what, double min, double max) {
  const json* v = Find(object, field);
  if (v == nullptr) return FieldError(what, field, "is missing");
  return JsonToDouble(*v, what, field, min, max);
}

absl::StatusOr<std::string> GetString(const json& object, absl::string_view field,
                                      absl::string_view what) {
  const json* v = Find(object, field);
  if (v == nullptr) return FieldError(what, field, "is missing");
  if (!v->is_string()) {
    return FieldError(what, field, absl::StrCat("must be a string, got ", DescribeJson(*v)));
  }
  return v->get<std::string>();
}

}  // namespace mpt
