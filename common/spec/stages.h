// The one definition of the stages a job is made of, their names and the
// job-state predicates, shared by the coordinator, the workers and mptctl.
//
// A pipeline job expands into the stages
//   "source/<task>"    one per source task       (JobKind SOURCE_TRAINING)
//   "distillation"     one                       (JobKind DISTILLATION)
//   "target/<task>"    one per target task, or
//   "target/shared"    one for all of them when they are adapted together
//                                                (JobKind TARGET_ADAPTATION)
// A single-stage job has the one stage of its kind. The stage kind names
// ("source", "distillation", "target") are also the names of the output
// folders of each stage and of the stage field of progress events.
//
// Thread-safety: free functions without state.
#ifndef MPT_COMMON_SPEC_STAGES_H_
#define MPT_COMMON_SPEC_STAGES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

inline constexpr absl::string_view kSourceStage = "source";
inline constexpr absl::string_view kDistillationStage = "distillation";
inline constexpr absl::string_view kTargetStage = "target";
// The id of the target stage that adapts all target tasks together.
inline constexpr absl::string_view kSharedTargetTask = "shared";

// True for SUCCEEDED, FAILED and CANCELLED: states a job never leaves.
bool IsFinalState(mpt::v1::JobState state);

// "source", "distillation" or "target" for the stage kinds; "" for PIPELINE
// and JOB_KIND_UNSPECIFIED.
absl::string_view StageKindName(mpt::v1::JobKind kind);

// The JobKind of a stage kind name; JOB_KIND_UNSPECIFIED for anything else.
mpt::v1::JobKind StageKindFromName(absl::string_view name);

// "source/<task>".
std::string SourceStageId(absl::string_view task);
// "distillation".
std::string DistillationStageId();
// "target/<task>", or "target/shared" when `task` is empty.
std::string TargetStageId(absl::string_view task);

}  // namespace mpt

#endif  // MPT_COMMON_SPEC_STAGES_H_
