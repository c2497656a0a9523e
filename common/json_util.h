// Reading untrusted JSON without exceptions, deep recursion or silent
// conversions.
//
// nlohmann::json throws on malformed text, on numbers it cannot represent
// (1e999), on wrong-typed accessors and on out-of-range integers, and its
// dump() recurses once per nesting level. Every file this project reads
// (configs, adapter configs, safetensors headers, checkpoint state, JSON
// Lines, specs) goes through these helpers instead:
//
//   ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(text, path));
//   ASSIGN_OR_RETURN(int64_t steps, GetInt(j, "steps", path, 0, 1'000'000));
//
// Every error is INVALID_ARGUMENT and starts with `what` (a file name, a
// file and line, ...). Messages never contain untrusted JSON longer than a
// few dozen characters.
//
// Thread-safety: free functions without state.
#ifndef MPT_COMMON_JSON_UTIL_H_
#define MPT_COMMON_JSON_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace mpt {

// The deepest nesting of arrays and objects accepted. Real files of this
// project nest at most 4 levels.
inline constexpr int kMaxJsonDepth = 64;

// OK when `text` has no NUL byte (nlohmann's parser would stop there and
// ignore the rest) and nests arrays and objects at most `max_depth` deep;
// INVALID_ARGUMENT naming `what` otherwise. ParseJson checks this itself;
// callers that parse with a callback of their own call it first.
absl::Status CheckJsonText(absl::string_view text, absl::string_view what,
                           int max_depth = kMaxJsonDepth);

// Parses `text` (all of it: a NUL byte is an error, not an end). Fails when
// the text is not JSON, nests deeper than `max_depth`, or holds a number
// that does not fit a double.
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, absl::string_view what,
                                         int max_depth = kMaxJsonDepth);

// A short, bounded description of a value for error messages: numbers and
// booleans as written, strings quoted and cut to 40 bytes, "an object" /
// "an array" / "null" otherwise.
std::string DescribeJson(const nlohmann::json& value);

// The JSON type name: "null", "boolean", "number", "string", "array", "object".
const char* JsonTypeName(const nlohmann::json& value);

// An integer in [min, max]. Errors name `what` and `field`: not an integer
// (a float, a string, ...), or out of range (no wrap-around: 2^32+4 is out of
// range for an int, not 4).
absl::StatusOr<int64_t> JsonToInt(const nlohmann::json& value, absl::string_view what,
                                  absl::string_view field, int64_t min, int64_t max);

// A finite number (integer or float) in [min, max].
absl::StatusOr<double> JsonToDouble(const nlohmann::json& value, absl::string_view what,
                                    absl::string_view field, double min, double max);

// object[field] as JsonToInt / JsonToDouble / a string; NOT a missing field:
// INVALID_ARGUMENT "<what>: field '<field>' is missing" (or, for the
// `fallback` overloads, the fallback when missing or null). `object` must
// be an object.
absl::StatusOr<int64_t> GetInt(const nlohmann::json& object, absl::string_view field,
                               absl::string_view what, int64_t min, int64_t max);
absl::StatusOr<int64_t> GetInt(const nlohmann::json& object, absl::string_view field,
                               absl::string_view what, int64_t min, int64_t max,
                               int64_t fallback);
absl::StatusOr<double> GetDouble(const nlohmann::json& object, absl::string_view field,
                                 absl::string_view what, double min, double max);
absl::StatusOr<std::string> GetString(const nlohmann::json& object, absl::string_view field,
                                      absl::string_view what);

}  // namespace mpt

#endif  // MPT_COMMON_JSON_UTIL_H_
