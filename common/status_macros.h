// Early-return helpers for absl::Status and absl::StatusOr.
//
//   RETURN_IF_ERROR(DoThing());
//   ASSIGN_OR_RETURN(auto file, SafetensorsReader::Open(path));
//
// Abseil 20220623 ships neither macro; these are the project's only copy.
#ifndef MPT_COMMON_STATUS_MACROS_H_
#define MPT_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MPT_STATUS_CONCAT_INNER_(a, b) a##b
#define MPT_STATUS_CONCAT_(a, b) MPT_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function when it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status mpt_status_ = (expr);                       \
    if (!mpt_status_.ok()) return mpt_status_;                 \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status,
// otherwise moves the value into `lhs` (a declaration or an lvalue).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  MPT_ASSIGN_OR_RETURN_IMPL_(MPT_STATUS_CONCAT_(mpt_statusor_, __LINE__), lhs, rexpr)

#define MPT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // MPT_COMMON_STATUS_MACROS_H_
