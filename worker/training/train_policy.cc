#include "worker/training/train_policy.h"

#include <algorithm>

namespace mpt {

TrainPolicy::TrainPolicy(int64_t total_steps, int64_t log_every, int64_t eval_every,
                         int64_t checkpoint_every)
    : total_(total_steps),
      log_every_(std::max<int64_t>(1, log_every)),
      eval_every_(eval_every),
      checkpoint_every_(checkpoint_every) {}

TrainPolicy TrainPolicy::FromSpec(const mpt::v1::TrainSpec& train, int64_t log_every) {
  if (log_every < 1) log_every = std::min<int64_t>(10, train.steps() / 50 + 1);
  return TrainPolicy(train.steps(), log_every, train.eval_every(), train.checkpoint_every());
}

StepActions TrainPolicy::After(int64_t done) const {
  StepActions a;
  const bool last = IsLast(done);
  a.log = done % log_every_ == 0 || last;
  a.evaluate = eval_every_ > 0 && done % eval_every_ == 0 && !last;
  a.save = checkpoint_every_ > 0 && done % checkpoint_every_ == 0 && !last;
  return a;
}

}  // namespace mpt
