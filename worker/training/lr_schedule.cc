#include "worker/training/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mpt {

LrSchedule LrSchedule::FromSpec(const mpt::v1::TrainSpec& train) {
  const std::string& name = train.optimizer().schedule();
  const Decay decay = name == "constant" ? Decay::kConstant
                      : name == "cosine" ? Decay::kCosine
                                         : Decay::kLinear;
  return LrSchedule(train.optimizer().learning_rate(), train.steps(),
                    train.optimizer().warmup_steps(), decay);
}

double LrSchedule::At(int64_t step) const {
  if (step < warmup_) return base_ * static_cast<double>(step) / static_cast<double>(warmup_);
  if (decay_ == Decay::kConstant) return base_;
  const double progress = static_cast<double>(step - warmup_) /
                          static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
  if (decay_ == Decay::kCosine) return base_ * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return base_ * std::max(0.0, 1.0 - progress);
}

}  // namespace mpt
