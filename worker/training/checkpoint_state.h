// A checkpoint's state.json (worker/training/checkpoint.h describes the
// folder), parsed without libtorch so that it can be fuzzed on its own.
//
// Free functions, no shared state: thread-safe.
#ifndef MPT_WORKER_TRAINING_CHECKPOINT_STATE_H_
#define MPT_WORKER_TRAINING_CHECKPOINT_STATE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The value of format in state.json that this code writes and reads.
inline constexpr int kCheckpointFormat = 2;

// What state.json holds, every value checked against the expectations.
struct CheckpointState {
  std::string fingerprint;
  int64_t step = 0;          // in [0, total_steps]
  int64_t best_step = -1;    // in [-1, step]
  double best_score = 0;     // finite, or -inf when written as null
  // A metric written as null is NaN.
  std::vector<std::pair<std::string, double>> best_metrics;
  // One per optimised parameter, each in [0, step].
  std::vector<int64_t> adamw_steps;
};

struct CheckpointStateExpectations {
  std::string fingerprint;
  int64_t total_steps = 0;
  size_t num_parameters = 0;
};

// Parses the text of state.json; `file` leads every message.
//   FAILED_PRECONDITION  no "format" (an older checkpoint), another format,
//                        or another fingerprint: the run should start over
//   DATA_LOSS            not JSON (common/json_util's ParseJson rules: depth,
//                        NUL bytes, numbers beyond a double), not an object,
//                        or a field missing, of the wrong type or out of
//                        range; the message names the field.
// Never throws.
absl::StatusOr<CheckpointState> ParseCheckpointState(absl::string_view text,
                                                     const std::string& file,
                                                     const CheckpointStateExpectations& expected);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_CHECKPOINT_STATE_H_
