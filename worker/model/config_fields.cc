#include "worker/model/config_fields.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace mpt {

absl::Status ConfigFieldReader::Error(absl::string_view field, absl::string_view problem) const {
  return absl::InvalidArgumentError(
      absl::StrCat(source_, ": field '", prefix_, field, "' ", problem));
}

const ConfigFieldReader::Json* ConfigFieldReader::Get(absl::string_view field) const {
  auto it = root_.find(std::string(field));
  if (it == root_.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> ConfigFieldReader::Integer(absl::string_view field,
                                                   const Json& value) const {
  if (!value.is_number_integer()) {
    return Error(field, absl::StrCat("must be an integer, got ", DescribeJson(value)));
  }
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
      return Error(field, absl::StrCat("is out of range (", u, ")"));
    }
    return static_cast<int64_t>(u);
  }
  const int64_t v = value.get<int64_t>();
  if (v > std::numeric_limits<int32_t>::max() || v < std::numeric_limits<int32_t>::min()) {
    return Error(field, absl::StrCat("is out of range (", v, ")"));
  }
  return v;
}

absl::StatusOr<int> ConfigFieldReader::Size(absl::string_view field, const Json& value) const {
  ASSIGN_OR_RETURN(int64_t v, Integer(field, value));
  if (v <= 0) return Error(field, absl::StrCat("must be positive, got ", v));
  return static_cast<int>(v);
}

absl::StatusOr<int> ConfigFieldReader::RequiredSize(absl::string_view field) const {
  const Json* value = Get(field);
  if (value == nullptr) return Error(field, "is missing (a positive integer is required)");
  return Size(field, *value);
}

absl::StatusOr<int> ConfigFieldReader::OptionalSize(absl::string_view field, int fallback) const {
  const Json* value = Get(field);
  if (value == nullptr) return fallback;
  return Size(field, *value);
}

absl::StatusOr<std::optional<double>> ConfigFieldReader::Number(absl::string_view field) const {
  const Json* value = Get(field);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) {
    return Error(field, absl::StrCat("must be a number, got ", DescribeJson(*value)));
  }
  const double v = value->get<double>();
  if (!std::isfinite(v)) return Error(field, "must be a finite number");
  return std::optional<double>(v);
}

absl::StatusOr<double> ConfigFieldReader::PositiveNumber(absl::string_view field,
                                                         double fallback) const {
  ASSIGN_OR_RETURN(std::optional<double> v, Number(field));
  if (!v.has_value()) return fallback;
  if (!(*v > 0)) {
    return Error(field, absl::StrCat("must be positive, got ", DescribeJson(*Get(field))));
  }
  return *v;
}

absl::StatusOr<std::optional<bool>> ConfigFieldReader::Bool(absl::string_view field) const {
  const Json* value = Get(field);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) {
    return Error(field, absl::StrCat("must be a boolean, got ", DescribeJson(*value)));
  }
  return std::optional<bool>(value->get<bool>());
}

absl::StatusOr<std::optional<std::string>> ConfigFieldReader::String(
    absl::string_view field) const {
  const Json* value = Get(field);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) {
    return Error(field, absl::StrCat("must be a string, got ", DescribeJson(*value)));
  }
  return std::optional<std::string>(value->get<std::string>());
}

absl::StatusOr<std::optional<int>> ConfigFieldReader::TokenId(absl::string_view field,
                                                              const Json& value) const {
  ASSIGN_OR_RETURN(int64_t v, Integer(field, value));
  if (v < 0) return Error(field, absl::StrCat("must not be negative, got ", v));
  return std::optional<int>(static_cast<int>(v));
}

absl::StatusOr<std::optional<int>> ConfigFieldReader::TokenId(absl::string_view field) const {
  const Json* value = Get(field);
  if (value == nullptr) return std::optional<int>();
  return TokenId(field, *value);
}

}  // namespace mpt
