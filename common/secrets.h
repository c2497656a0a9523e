// Secrets: generating them and comparing them.
#ifndef MPT_COMMON_SECRETS_H_
#define MPT_COMMON_SECRETS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The metadata every WorkerService call after RegisterWorker carries the
// registration's secret in (RegisterWorkerResponse.worker_key).
inline constexpr char kWorkerKeyMetadata[] = "x-mpt-worker-key";

// True when `a` equals `b`; the time taken does not depend on where they
// first differ (only on the length of `a`).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// `bytes` bytes from the kernel's random source (getrandom(2)), as 2 * bytes
// lowercase hex digits. INTERNAL when the kernel refuses.
absl::StatusOr<std::string> RandomHexSecret(int bytes);

}  // namespace mpt

#endif  // MPT_COMMON_SECRETS_H_
