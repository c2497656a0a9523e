// Typed reads of a Hugging Face config.json object's fields, shared by the
// config parsers of the model families (t5_config, llama_config): every
// error is INVALID_ARGUMENT "<source>: field '<prefix><name>' <problem>",
// with the offending value described (common/json_util.h's DescribeJson).
// Torch-free.
#ifndef MPT_WORKER_MODEL_CONFIG_FIELDS_H_
#define MPT_WORKER_MODEL_CONFIG_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// Reads the fields of one JSON object (`root`, which must outlive it); a
// nested object's reader takes a `prefix` such as "rope_scaling." so that
// its errors name "rope_scaling.factor". "Absent" means missing or null.
class ConfigFieldReader {
 public:
  using Json = nlohmann::json;

  ConfigFieldReader(const Json& root, absl::string_view source, std::string prefix = "")
      : root_(root), source_(source), prefix_(std::move(prefix)) {}

  absl::Status Error(absl::string_view field, absl::string_view problem) const;
  absl::string_view source() const { return source_; }

  // The value, or nullptr when absent.
  const Json* Get(absl::string_view field) const;
  // Whether the key is there at all (null included).
  bool Present(absl::string_view field) const { return root_.contains(std::string(field)); }

  // An integer within int32's range.
  absl::StatusOr<int64_t> Integer(absl::string_view field, const Json& value) const;
  // An integer > 0.
  absl::StatusOr<int> Size(absl::string_view field, const Json& value) const;
  absl::StatusOr<int> RequiredSize(absl::string_view field) const;
  absl::StatusOr<int> OptionalSize(absl::string_view field, int fallback) const;
  // A finite number (integers accepted); nullopt when absent.
  absl::StatusOr<std::optional<double>> Number(absl::string_view field) const;
  // A number > 0, `fallback` when absent.
  absl::StatusOr<double> PositiveNumber(absl::string_view field, double fallback) const;
  absl::StatusOr<std::optional<bool>> Bool(absl::string_view field) const;
  absl::StatusOr<std::optional<std::string>> String(absl::string_view field) const;
  // A token id (an integer >= 0): of `value`, or of the field (nullopt when
  // absent).
  absl::StatusOr<std::optional<int>> TokenId(absl::string_view field, const Json& value) const;
  absl::StatusOr<std::optional<int>> TokenId(absl::string_view field) const;

 private:
  const Json& root_;
  absl::string_view source_;
  std::string prefix_;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_CONFIG_FIELDS_H_
