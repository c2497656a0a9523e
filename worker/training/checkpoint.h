// The on-disk format of a training checkpoint, written and read back.
//
// A checkpoint is a folder:
//   state.json          {"format": 2, "fingerprint", "step", "best_step",
//                        "best_score", "best_metrics", "adamw_steps"}
//   prompt.safetensors  the prompt's tensors, by their state-dict names
//   adamw.safetensors   per optimised parameter i: "<i>.exp_avg" and
//                       "<i>.exp_avg_sq" (absent before the first update)
//   best.safetensors    the best prompt so far, when one is kept
// WriteCheckpoint replaces the whole folder atomically (common/file_util's
// ReplaceFolder): a reader sees the old checkpoint or the new one, never a
// mix.
//
// ReadCheckpoint trusts nothing it reads: every JSON field is type- and
// range-checked, every tensor must have exactly the expected names, shapes
// and dtypes and hold finite values. It never throws.
//
// Fingerprints: SettingsFingerprint is the SHA-256 (common/sha256.h) of a
// canonical, length-prefixed serialisation of the run's settings, so every
// build and every worker computes the same value. Checkpoints written
// before this format (format 1: optimizer.pt and a std::hash fingerprint)
// never match and so are not resumed: such a run starts over and replaces
// the old checkpoint at its first save.
//
// Free functions, no shared state: thread-safe as long as two calls do not
// use the same folder.
#ifndef MPT_WORKER_TRAINING_CHECKPOINT_H_
#define MPT_WORKER_TRAINING_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "worker/training/checkpoint_state.h"  // kCheckpointFormat

namespace mpt {

// AdamW's state for one parameter. `exp_avg` undefined: no update yet (then
// `step` is 0 and `exp_avg_sq` undefined too).
struct AdamWSlot {
  int64_t step = 0;
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
};

struct CheckpointContents {
  std::string fingerprint;
  // Steps done: the run continues with step `step` (0-based).
  int64_t step = 0;
  // The prompt's tensors by state-dict name.
  std::map<std::string, at::Tensor> prompt;
  // Per optimised parameter, in the optimiser's order.
  std::vector<AdamWSlot> adamw;
  // The best evaluation so far: its score (-inf and best_step -1 when none),
  // its step and all its metrics. A metric that is not finite is stored as
  // null and read back as NaN.
  double best_score = -INFINITY;
  int64_t best_step = -1;
  std::vector<std::pair<std::string, double>> best_metrics;
  // The prompt that scored best_score; empty when none is kept.
  std::map<std::string, at::Tensor> best;
};

// What a checkpoint must match to be read back.
struct CheckpointExpectations {
  // The run's fingerprint.
  std::string fingerprint;
  // The run's total steps: `step` must lie in [0, total_steps].
  int64_t total_steps = 0;
  // The prompt's tensors (names, shapes, dtypes; values are not compared).
  std::map<std::string, at::Tensor> prompt;
  // The optimised parameters, in the optimiser's order (shapes, dtypes).
  std::vector<at::Tensor> parameters;
};

// True when `dir` holds a checkpoint's state.json (valid or not).
bool CheckpointExists(const std::string& dir);

// Writes `contents` as the checkpoint folder `dir`, replacing what was
// there. Tensors may live on any device. OK, or the error of the write
// (INTERNAL naming the path; INVALID_ARGUMENT for a tensor of an
// unsupported dtype); on error `dir` is left as it was.
absl::Status WriteCheckpoint(const std::string& dir, const CheckpointContents& contents);

// Reads the checkpoint folder `dir`; tensors come back on the CPU.
//   NOT_FOUND            `dir` has no state.json
//   FAILED_PRECONDITION  written under another fingerprint or format: the
//                        run should start over (nothing else is checked)
//   DATA_LOSS            anything else wrong: state.json is not JSON or a
//                        field is missing, of the wrong type or out of range
//                        (step outside [0, total_steps], best_step outside
//                        [-1, step], a negative AdamW step, ...), a tensor
//                        file is missing or unreadable, or a tensor is
//                        missing, extra, of the wrong shape or dtype, or not
//                        finite (or a negative exp_avg_sq). The message
//                        names the file and the field or tensor.
absl::StatusOr<CheckpointContents> ReadCheckpoint(const std::string& dir,
                                                  const CheckpointExpectations& expected);

// SHA-256, as 64 lowercase hex digits, of `parts` serialised canonically:
// a version tag, then per part its length as 8 little-endian bytes and its
// bytes. Distinct part lists never share a serialisation.
std::string SettingsFingerprint(absl::Span<const std::string> parts);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_CHECKPOINT_H_
