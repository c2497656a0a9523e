// A guard for the output files of the binaries (mpt_train's --events, the
// dump tools' --out): an output must not be one of the inputs, which writing
// it would destroy (t5_dump --out=<model>/model.safetensors would replace the
// weights).
//
// Torch-free; thread-safe.
#ifndef MPT_WORKER_OUTPUT_PATHS_H_
#define MPT_WORKER_OUTPUT_PATHS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mpt {

// An input of a run: `what` names it in errors ("--model", "source.tasks[0]
// .train_path"); `path` is a file, or a folder that stands for every entry
// directly inside it (a model or adapter folder).
struct InputPath {
  std::string what;
  std::string path;
};

// OK when `output` is not the same file as any input (compared with
// std::filesystem::equivalent, so that another spelling, a symbolic or a
// hard link is caught too) and is not itself an input folder. INVALID_ARGUMENT
// "<flag>: <output> is <file>, an input (<what>); writing it would destroy
// it" otherwise. Paths that do not exist (yet) are not errors.
absl::Status CheckOutputIsNotAnInput(const std::string& output, absl::string_view flag,
                                     const std::vector<InputPath>& inputs);

// OK when no input lies in (or is) one of the folders a run replaces
// (`replaced`: mpt_train's <out>/source, <out>/distillation, ... and its
// checkpoint folders), compared after resolving symbolic links and "..".
// INVALID_ARGUMENT "<flag>: <folder> is replaced by this run's output,
// but it holds <input> (<what>); ..." otherwise.
absl::Status CheckNoInputInside(const std::vector<std::string>& replaced, absl::string_view flag,
                                const std::vector<InputPath>& inputs);

}  // namespace mpt

#endif  // MPT_WORKER_OUTPUT_PATHS_H_
