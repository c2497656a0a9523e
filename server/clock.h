// Time as the coordinator sees it, behind an interface so that tests can move
// it by hand (see fake_clock.h).
//
// The clock decides timestamps, leases and event rate limits. Blocking waits
// (long polls, WatchJob, StoreGet) always wait in real time: a fake clock
// never blocks anything.
#ifndef MPT_SERVER_CLOCK_H_
#define MPT_SERVER_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mpt {

// Implementations must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

// The system's wall clock (absl::Now()). Stateless and thread-safe.
class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace mpt

#endif  // MPT_SERVER_CLOCK_H_
