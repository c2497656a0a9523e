// When the training loop logs, evaluates and saves: the schedule half of
// Marian's scheduler, kept apart from the loop so that it can be read and
// tested on its own.
//
// Pure: the answer depends only on the settings and the number of steps
// done, so every rank of a gang and a resumed run decide alike.
// Thread-safe (immutable after construction).
#ifndef MPT_WORKER_TRAINING_TRAIN_POLICY_H_
#define MPT_WORKER_TRAINING_TRAIN_POLICY_H_

#include <cstdint>

#include "proto/mpt/v1/spec.pb.h"

namespace mpt {

// What to do once a step has finished.
struct StepActions {
  bool log = false;       // report the mean losses of the window that ends here
  bool evaluate = false;  // a periodic evaluation
  bool save = false;      // a periodic checkpoint
};

class TrainPolicy {
 public:
  // `eval_every` / `checkpoint_every` <= 0: never periodically.
  // `log_every` < 1 is treated as 1.
  TrainPolicy(int64_t total_steps, int64_t log_every, int64_t eval_every,
              int64_t checkpoint_every);

  // From a stage's settings: steps, eval_every, checkpoint_every, and a
  // logging window of `log_every` steps, or when that is < 1 of
  // min(10, steps / 50 + 1) steps.
  static TrainPolicy FromSpec(const mpt::v1::TrainSpec& train, int64_t log_every = 0);

  // After `done` steps (1-based: the step just finished). The last step
  // (done == total_steps) is always logged but never evaluated or saved
  // periodically: the loop evaluates and saves once at the end, after it
  // has put the best prompt back (see IsLast).
  StepActions After(int64_t done) const;

  bool IsLast(int64_t done) const { return done == total_; }
  int64_t total_steps() const { return total_; }
  int64_t log_every() const { return log_every_; }

 private:
  int64_t total_;
  int64_t log_every_;
  int64_t eval_every_;
  int64_t checkpoint_every_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_TRAIN_POLICY_H_
