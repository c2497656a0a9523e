// The learning-rate schedule of prompt training: linear warm-up from 0, then
// constant, linear decay to 0, or cosine decay to 0 at the last step.
//
// A pure function of the step, so that a resumed run and every rank of a
// data-parallel gang use the same rate at the same step without keeping any
// state. Thread-safe (immutable after construction).
#ifndef MPT_WORKER_TRAINING_LR_SCHEDULE_H_
#define MPT_WORKER_TRAINING_LR_SCHEDULE_H_

#include <cstdint>

#include "proto/mpt/v1/spec.pb.h"

namespace mpt {

class LrSchedule {
 public:
  enum class Decay { kConstant, kLinear, kCosine };

  // `base_rate` is reached at step `warmup_steps`; decay ends at
  // `total_steps`. Non-positive `total_steps - warmup_steps` is treated as 1.
  LrSchedule(double base_rate, int64_t total_steps, int64_t warmup_steps, Decay decay)
      : base_(base_rate), total_(total_steps), warmup_(warmup_steps), decay_(decay) {}

  // The schedule of a stage's settings: optimizer.learning_rate,
  // optimizer.warmup_steps, steps, and optimizer.schedule ("constant",
  // "cosine"; anything else, "linear" included, decays linearly; the spec
  // loader rejects unknown names before this is reached).
  static LrSchedule FromSpec(const mpt::v1::TrainSpec& train);

  // The rate for `step` (0-based; the step about to run). Warm-up:
  // base * step / warmup for step < warmup. Then, with
  // progress = (step - warmup) / max(1, total - warmup):
  //   constant  base
  //   linear    base * max(0, 1 - progress)
  //   cosine    base * (1 + cos(pi * min(1, progress))) / 2
  double At(int64_t step) const;

 private:
  double base_;
  int64_t total_;
  int64_t warmup_;
  Decay decay_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_LR_SCHEDULE_H_
