// The one place where absl::Status and grpc::Status meet.
//
// The canonical codes have the same numbers in both libraries, so a code
// crosses unchanged and the message is kept as it is. Servers return
// ToGrpcStatus(core_call()); clients turn what a stub returns back into an
// absl::Status with FromGrpcStatus() and handle it like any other error.
//
// Torch-free and stateless; safe from any thread.
#ifndef MPT_COMMON_GRPC_STATUS_H_
#define MPT_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace mpt {

// OK for an OK status; otherwise the same code, and the message as
// ErrorMessageForClient() makes it (one line, at most about 4 KiB).
grpc::Status ToGrpcStatus(const absl::Status& status);

// OK for an OK status; otherwise the same code and error_message(). A code
// outside the canonical range becomes UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

// True for the codes a caller retries after a pause: UNAVAILABLE (the
// coordinator is restarting, unreachable, or busy) and DEADLINE_EXCEEDED.
bool IsRetryableRpcError(const absl::Status& status);

}  // namespace mpt

#endif  // MPT_COMMON_GRPC_STATUS_H_
