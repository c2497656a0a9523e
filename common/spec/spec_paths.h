// The files and folders a pipeline spec names, and confining them to the
// folders a machine serves jobs' files from.
//
// A job's spec names paths on the machines that run it (the base model,
// data, adapters). A worker (and a coordinator that checks spec files)
// given --data_roots reads only below those folders, so that whoever
// submits a job cannot have it read, or probe for, any other file there.
#ifndef MPT_COMMON_SPEC_SPEC_PATHS_H_
#define MPT_COMMON_SPEC_SPEC_PATHS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/mpt/v1/spec.pb.h"

namespace mpt {

struct SpecPath {
  std::string field;  // "source.tasks[0].train_path"
  std::string path;   // as the spec has it (non-empty)
};

// Every non-empty path field of `spec`, in the spec's order: base_model,
// each stage's tasks' train_path and eval_path, source.init_adapters,
// distillation.teacher_adapters, target.teacher_adapters,
// target.source_adapter.
std::vector<SpecPath> SpecInputPaths(const mpt::v1::PipelineSpec& spec);

// The paths the service reads as files on its machines: SpecInputPaths
// without distillation.teacher_adapters and target.source_adapter, which
// the service fills from artefacts (fetched into an assignment's own
// folder), not from the spec's paths. `prefix` leads each field
// ("spec." for the coordinator's errors).
std::vector<SpecPath> ServiceFilePaths(const mpt::v1::PipelineSpec& spec,
                                       absl::string_view prefix = "");

// Parses a --data_roots value: comma-separated absolute folders (empty: no
// confinement). INVALID_ARGUMENT naming `flag` for a relative or empty
// entry.
absl::StatusOr<std::vector<std::string>> ParseDataRoots(absl::string_view value,
                                                         absl::string_view flag);

// OK when every path lies in one of `roots` (or `roots` is empty), compared
// after making it absolute and resolving "..", "." and, where they exist,
// symbolic links (a link inside a root that points outside is outside).
// INVALID_ARGUMENT "<field>: <path> is outside the folders this <machine>
// reads jobs' files from (<flag>: ...)" otherwise; the message never says
// whether the path exists.
absl::Status CheckPathsWithinRoots(const std::vector<SpecPath>& paths,
                                   const std::vector<std::string>& roots,
                                   absl::string_view machine, absl::string_view flag);

}  // namespace mpt

#endif  // MPT_COMMON_SPEC_SPEC_PATHS_H_
