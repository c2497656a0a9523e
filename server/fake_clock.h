// A clock that moves only when told to, for tests of leases and rate limits.
#ifndef MPT_SERVER_FAKE_CLOCK_H_
#define MPT_SERVER_FAKE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"

namespace mpt {

// Thread-safe.
class FakeClock final : public Clock {
 public:
  // Starts at `start` (default: 2026-01-01 00:00:00 UTC).
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1767225600)) : now_(start) {}

  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }

  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mpt

#endif  // MPT_SERVER_FAKE_CLOCK_H_
