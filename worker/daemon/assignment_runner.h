// Runs an assignment's MPT stage on the job's base model (T5 or a
// decoder-only model, whichever family the folder's config.json names; see
// worker/lm/base_model_loader.h): the worker daemon's AssignmentExecutor for
// real training.
//
//   source training        one source task (Assignment.task) -> one teacher
//   distillation           the teachers -> one multitask adapter; a gang of
//                          world_size > 1 trains data-parallel over Gloo (or
//                          NCCL on GPUs), formed through the daemon's store
//   target adaptation      one target task (or the shared group) from the
//                          distillation's adapter
//
// Base models stay loaded across assignments (a small cache keyed by the
// model folder), so a worker pays the loading once. The stage keeps its
// checkpoint in `<work_dir>/checkpoint` (StageEnv::checkpoint_dir); a
// checkpoint fetched by the daemon is moved there, so the stage resumes at
// its step. A cancel seen by any rank of a gang stops every rank before the
// same step (the trainer carries the flag in its per-step all-reduce). libtorch errors are returned as INTERNAL with
// their message; nothing throws.
//
// Not thread-safe: the daemon runs one assignment at a time.
#ifndef MPT_WORKER_DAEMON_ASSIGNMENT_RUNNER_H_
#define MPT_WORKER_DAEMON_ASSIGNMENT_RUNNER_H_

#include <list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/collectives/communicator_factory.h"
#include "worker/lm/base_model_loader.h"
#include "worker/model/autocast.h"
#include "worker/model/compute_threads.h"
#include "worker/daemon/worker_daemon.h"

namespace mpt {

struct AssignmentRunnerOptions {
  // "cpu", "cuda", "cuda:N". Default "cpu".
  std::string device = "cpu";
  // The frozen weights' dtype: "auto" (BaseModelOptions::auto_dtype: a
  // decoder-only model in the precision its config.json states where the
  // device computes in it, T5 in float32), "float32", "bfloat16" or
  // "float16"; prompts and their optimiser state stay fp32. Default "auto".
  std::string dtype = "auto";
  // "off" or "bf16": bf16 autocast of the frozen model while each
  // assignment trains (worker/model/autocast.h). Default "off".
  std::string autocast = "off";
  // Model folders loaded at start-up; one that does not load fails Create().
  std::vector<std::string> preload_models;
  // Base models kept loaded; the least recently used goes first. Default 2.
  int max_cached_models = 2;
  // The compute threads the process applied at start-up: each assignment
  // then gives libtorch every one of them when its model computes in bf16
  // or fp16 on the CPU (UseThreadsForProducts). Unset: left alone.
  std::optional<ComputeThreads> compute_threads;
  // On a CPU the source stages of a pack train side by side in this many
  // lanes, and a stage alone (a gang's rank excepted) in this many thread
  // ranks (StageEnv::lanes); 1: a pack as one mixed batch, a stage on one
  // thread plus BLAS's. Default 1.
  int lanes = 1;
  // The only folders the paths a job's spec names may lie in
  // (CheckPathsWithinRoots, common/spec/spec_paths.h); empty: any path.
  std::vector<std::string> data_roots;
  // Collective engine for gangs: "auto" (NCCL on a CUDA device when this
  // build has it, Gloo otherwise), "gloo" or "nccl". Default "auto".
  std::string collective = "auto";
  // Gloo's address or interface and the collective timeout (see
  // CommunicatorOptions). The default timeout here is 10 minutes: a gang
  // member whose peer died waits this long before it gives up.
  CommunicatorOptions communicator = [] {
    CommunicatorOptions o;
    o.timeout = absl::Minutes(10);
    return o;
  }();
};

class AssignmentRunner final : public AssignmentExecutor {
 public:
  // INVALID_ARGUMENT for a device libtorch does not know or cannot use, an
  // unknown dtype or autocast mode, an unknown collective, or max_cached_models < 1;
  // LoadBaseModel's error, led by "--models: cannot load <folder>: ", for a
  // preload folder that does not load.
  static absl::StatusOr<std::unique_ptr<AssignmentRunner>> Create(
      const AssignmentRunnerOptions& options);
  AssignmentRunner(const AssignmentRunner&) = delete;
  AssignmentRunner& operator=(const AssignmentRunner&) = delete;

  // See AssignmentExecutor. INVALID_ARGUMENT for an assignment whose kind or
  // inputs do not fit (a distillation without teachers, a target without a
  // source adapter); the stage's errors otherwise; UNAVAILABLE when a gang
  // peer is lost, DEADLINE_EXCEEDED or UNAVAILABLE when the gang does not
  // form (the daemon reports both as peer failures); CANCELLED when the
  // context was cancelled while the gang's collectives ran (a cancel aborts
  // a collective at once through context.set_abort).
  absl::StatusOr<AssignmentOutput> Run(const AssignmentContext& context) override;

  // See AssignmentExecutor: the members train in one pass over the shared
  // model (RunSourcePack in worker/training/mpt_stages.h), each ending as it
  // would alone up to fp32 summation order. A member that is not a
  // single-worker source stage, or names another base model than the first
  // member, fails alone with INVALID_ARGUMENT.
  std::vector<absl::StatusOr<AssignmentOutput>> RunPack(
      const std::vector<const AssignmentContext*>& contexts) override;

  // The collectives this runner can join ("gloo", and "nccl" on CUDA).
  std::vector<std::string> collectives() const;

 private:
  struct LoadedModel {
    std::string folder;
    BaseModel base;
  };

  AssignmentRunner(AssignmentRunnerOptions options, const BaseModelOptions& load_options,
                   AutocastMode autocast)
      : options_(std::move(options)),
        device_(load_options.device),
        load_options_(load_options),
        autocast_(autocast) {}
  absl::StatusOr<LoadedModel> Model(const std::string& folder);
  // Before a stage's products in `product_dtype`: logs Bf16PrecisionWarning
  // where it applies and, on a CPU with compute threads set, splits them
  // for such products (UseThreadsForProducts).
  void PrepareProducts(c10::ScalarType product_dtype) const;
  absl::StatusOr<AssignmentOutput> RunUnsafe(const AssignmentContext& context);
  // INVALID_ARGUMENT when a path the spec names (and this worker reads) is
  // outside options_.data_roots.
  absl::Status CheckSpecPaths(const mpt::v1::PipelineSpec& spec) const;
  std::vector<absl::StatusOr<AssignmentOutput>> RunPackUnsafe(
      const std::vector<const AssignmentContext*>& contexts);
  std::string CollectiveKind() const;

  const AssignmentRunnerOptions options_;
  const c10::Device device_;
  const BaseModelOptions load_options_;  // device and dtype of every model loaded
  const AutocastMode autocast_;
  std::list<LoadedModel> cache_;  // most recently used first
};

}  // namespace mpt

#endif  // MPT_WORKER_DAEMON_ASSIGNMENT_RUNNER_H_
