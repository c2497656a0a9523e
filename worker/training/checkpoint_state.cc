#include "worker/training/checkpoint_state.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

using nlohmann::json;

absl::Status Corrupt(absl::string_view file, absl::string_view field, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(file, ": ", field, ": ", what));
}

absl::StatusOr<int64_t> IntField(const json& j, const char* key, absl::string_view file) {
  auto it = j.find(key);
  if (it == j.end()) return Corrupt(file, key, "missing");
  if (!it->is_number_integer()) return Corrupt(file, key, "not an integer");
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Corrupt(file, key, "out of range");
  }
  return it->get<int64_t>();
}

// A finite number, or null (read as `if_null`).
absl::StatusOr<double> NumberOrNull(const json& v, absl::string_view field, absl::string_view file,
                                    double if_null) {
  if (v.is_null()) return if_null;
  if (!v.is_number()) return Corrupt(file, field, "not a number");
  const double d = v.get<double>();
  if (!std::isfinite(d)) return Corrupt(file, field, "not finite");
  return d;
}

absl::StatusOr<std::vector<std::pair<std::string, double>>> ReadMetrics(const json& j,
                                                                        absl::string_view file) {
  auto it = j.find("best_metrics");
  if (it == j.end()) return Corrupt(file, "best_metrics", "missing");
  if (!it->is_array()) return Corrupt(file, "best_metrics", "not an array");
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& kv = (*it)[i];
    const std::string field = absl::StrCat("best_metrics[", i, "]");
    if (!kv.is_array() || kv.size() != 2 || !kv[0].is_string()) {
      return Corrupt(file, field, "not a [name, value] pair");
    }
    if (!kv[1].is_null() && !kv[1].is_number()) return Corrupt(file, field, "value not a number");
    const double value = kv[1].is_null() ? NAN : kv[1].get<double>();
    out.emplace_back(kv[0].get<std::string>(), value);
  }
  return out;
}

}  // namespace

absl::StatusOr<CheckpointState> ParseCheckpointState(absl::string_view text,
                                                     const std::string& file,
                                                     const CheckpointStateExpectations& expected) {
  absl::StatusOr<json> parsed = ParseJson(text, file);
  if (!parsed.ok()) {
    // ParseJson's message starts with the file name; name the field after it.
    return Corrupt(file, "file",
                   absl::StripPrefix(parsed.status().message(), absl::StrCat(file, ": ")));
  }
  const json& j = *parsed;
  if (!j.is_object()) return Corrupt(file, "file", "not a JSON object");

  if (!j.contains("format")) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": an older checkpoint format; not resumed"));
  }
  ASSIGN_OR_RETURN(const int64_t format, IntField(j, "format", file));
  if (format != kCheckpointFormat) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": format ", format, " is not ", kCheckpointFormat));
  }
  auto fp = j.find("fingerprint");
  if (fp == j.end() || !fp->is_string()) return Corrupt(file, "fingerprint", "not a string");
  CheckpointState c;
  c.fingerprint = fp->get<std::string>();
  if (c.fingerprint != expected.fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": the checkpoint was written by a run with other settings"));
  }

  ASSIGN_OR_RETURN(c.step, IntField(j, "step", file));
  if (c.step < 0 || c.step > expected.total_steps) {
    return Corrupt(file, "step", absl::StrCat(c.step, " is outside [0, ", expected.total_steps, "]"));
  }
  ASSIGN_OR_RETURN(c.best_step, IntField(j, "best_step", file));
  if (c.best_step < -1 || c.best_step > c.step) {
    return Corrupt(file, "best_step", absl::StrCat(c.best_step, " is outside [-1, ", c.step, "]"));
  }
  auto score = j.find("best_score");
  if (score == j.end()) return Corrupt(file, "best_score", "missing");
  ASSIGN_OR_RETURN(c.best_score, NumberOrNull(*score, "best_score", file, -INFINITY));
  ASSIGN_OR_RETURN(c.best_metrics, ReadMetrics(j, file));

  auto steps = j.find("adamw_steps");
  if (steps == j.end() || !steps->is_array()) {
    return Corrupt(file, "adamw_steps", "missing or not an array");
  }
  if (steps->size() != expected.num_parameters) {
    return Corrupt(file, "adamw_steps",
                   absl::StrCat(steps->size(), " entries for ", expected.num_parameters,
                                " parameters"));
  }
  for (size_t i = 0; i < steps->size(); ++i) {
    const json& s = (*steps)[i];
    const bool in_range =
        s.is_number_unsigned() ? s.get<uint64_t>() <= static_cast<uint64_t>(c.step)
                               : s.is_number_integer() && s.get<int64_t>() >= 0 &&
                                     s.get<int64_t>() <= c.step;
    if (!in_range) {
      return Corrupt(file, absl::StrCat("adamw_steps[", i, "]"), "not an integer in [0, step]");
    }
    c.adamw_steps.push_back(s.get<int64_t>());
  }
  return c;
}

}  // namespace mpt
