#include "common/spec/stages.h"

#include "absl/strings/str_cat.h"

namespace mpt {

bool IsFinalState(mpt::v1::JobState state) {
  return state == mpt::v1::SUCCEEDED || state == mpt::v1::FAILED ||
         state == mpt::v1::CANCELLED;
}

absl::string_view StageKindName(mpt::v1::JobKind kind) {
  switch (kind) {
    case mpt::v1::SOURCE_TRAINING:
      return kSourceStage;
    case mpt::v1::DISTILLATION:
      return kDistillationStage;
    case mpt::v1::TARGET_ADAPTATION:
      return kTargetStage;
    default:
      return "";
  }
}

mpt::v1::JobKind StageKindFromName(absl::string_view name) {
  if (name == kSourceStage) return mpt::v1::SOURCE_TRAINING;
  if (name == kDistillationStage) return mpt::v1::DISTILLATION;
  if (name == kTargetStage) return mpt::v1::TARGET_ADAPTATION;
  return mpt::v1::JOB_KIND_UNSPECIFIED;
}

std::string SourceStageId(absl::string_view task) { return absl::StrCat(kSourceStage, "/", task); }

std::string DistillationStageId() { return std::string(kDistillationStage); }

std::string TargetStageId(absl::string_view task) {
  return absl::StrCat(kTargetStage, "/", task.empty() ? kSharedTargetTask : task);
}

}  // namespace mpt
