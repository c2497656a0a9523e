// Job planning: validates a SubmitJobRequest, fills the spec's defaults and
// expands the job into its stages (see server/README.md, "Jobs and
// stages"). Pure: no coordinator state and no locks; the only outside
// world it looks at is the file system, and only with check_spec_files.
// Thread-safe.
#ifndef MPT_SERVER_JOB_PLANNER_H_
#define MPT_SERVER_JOB_PLANNER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/mpt/v1/service.pb.h"
#include "server/coordinator_state.pb.h"

namespace mpt {

struct JobPlannerOptions {
  // The largest distillation.world_size accepted. Default 8.
  int max_world_size = 8;
  // Check that base_model is a folder and the data paths files, as this
  // process sees the file system. Default false.
  bool check_spec_files = false;
  // When set, every path the spec names (bar the artefacts a single-stage
  // job consumes) must lie below one of these folders
  // (CheckPathsWithinRoots), checked before any file is looked at, so that
  // a client cannot learn what exists elsewhere. Default empty: any path.
  std::vector<std::string> data_roots;
};

// An artefact a single-stage job consumes; it must exist and be an adapter
// when the job is stored (the planner cannot know).
struct RequiredAdapter {
  std::string field;     // e.g. "distillation.teacher_adapters[0]"
  std::string artifact;  // "jobs/{id}/artifacts/{id}"
};

struct JobPlan {
  // The spec with its defaults filled in; a single-stage job keeps only
  // its own stage's section.
  mpt::v1::PipelineSpec spec;
  // The stages in order (index 0, 1, ...), all QUEUED, with their
  // dependencies and fixed inputs.
  std::vector<coordinator::StageRecord> stages;
  // Artefacts the caller must check before storing the job.
  std::vector<RequiredAdapter> required_adapters;
};

// The plan for `request`. INVALID_ARGUMENT listing every problem found,
// each led by its field path ("kind: ...", "source.tasks[0].train_path:
// ...", "distillation.world_size: ..."), for: a string field that is not
// valid UTF-8 (reported alone, e.g. "spec.source.tasks[0].name: not valid
// UTF-8"); an unknown kind; a spec the validators of
// common/spec/spec_loader.h reject (bounds included); a world size above
// max_world_size; a base_model, train_path or eval_path that is relative
// or has a ".." component ("spec.base_model: ...",
// "spec.source.tasks[0].train_path: ..."); or (with check_spec_files) a
// missing folder or file.
absl::StatusOr<JobPlan> PlanJob(const mpt::v1::SubmitJobRequest& request,
                                const JobPlannerOptions& options);

// The SHA-256 (hex) of the deterministic serialisation of a planned spec,
// the job kind and the display name: equal for two submissions that ask
// for the same job. SubmitJob compares it for a reused request_id.
std::string RequestFingerprint(const mpt::v1::PipelineSpec& planned_spec, mpt::v1::JobKind kind,
                               const std::string& display_name);

}  // namespace mpt

#endif  // MPT_SERVER_JOB_PLANNER_H_
