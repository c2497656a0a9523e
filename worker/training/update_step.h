// The update strategy of prompt training (Marian's "graph group"): how one
// step's gradients become a parameter update across a data-parallel gang.
//
// Per step, every rank calls, in this order:
//   Agree()    one small all-reduce: the global target/input token counts
//              (for loss normalisation) and the gang's stop flag;
//   Begin()    sets the learning rate and clears the gradients;
//   (the caller runs forward and backward on its share of the batch)
//   Finish()   one all-reduce of every gradient plus the logged loss parts,
//              global-norm clipping, then torch::optim::AdamW's step.
// The stop flag makes cancellation collective: a rank told to stop says so
// in Agree(); when any rank did, every rank learns it from the same
// all-reduce and all of them stop before the same step.
//
// Collective calls go through the Communicator (see communicator.h): every
// rank must make the same calls in the same order. The small tensors travel
// on the parameters' device (NCCL needs CUDA tensors).
//
// Not thread-safe. The parameters and the communicator are borrowed and must
// outlive the object; the optimiser state is owned.
#ifndef MPT_WORKER_TRAINING_UPDATE_STEP_H_
#define MPT_WORKER_TRAINING_UPDATE_STEP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/collectives/communicator.h"
#include "worker/training/checkpoint.h"

namespace mpt {

// What the ranks agreed on before a step.
struct StepAgreement {
  double target_tokens = 0;  // real target tokens of the whole global batch
  double input_tokens = 0;   // real input tokens of the whole global batch
  bool stop = false;         // some rank was told to stop
};

// Scales the gradients of `params` so that their global L2 norm is at most
// `max_norm` (norm + 1e-6 in the denominator); no change when it already is.
// Returns the norm before clipping (0 when no parameter has a gradient;
// NaN or infinite when a gradient is, and then nothing is scaled).
double ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm);

class UpdateStep {
 public:
  // AdamW over `params` (they must require gradients) with the spec's
  // learning_rate, weight_decay and max_grad_norm (<= 0: no clipping);
  // betas and eps are torch's defaults. `label` names the run in errors
  // ("stage source (task animal)").
  UpdateStep(std::vector<at::Tensor> params, const mpt::v1::OptimizerSpec& spec,
             Communicator* comm, std::string label = "");

  UpdateStep(const UpdateStep&) = delete;
  UpdateStep& operator=(const UpdateStep&) = delete;

  // Sums this rank's token counts and stop request over the gang. The
  // communicator's error (UNAVAILABLE when a peer is gone) on failure.
  absl::StatusOr<StepAgreement> Agree(int64_t target_tokens, int64_t input_tokens,
                                      bool stop_requested);

  // Sets the learning rate of the coming update and zeroes the gradients.
  void Begin(double learning_rate);

  // After backward: sums the gradients (a parameter without a gradient adds
  // zeros) and `local_parts` over the gang, clips, and applies AdamW.
  // Returns the summed parts. `step` (1-based, the step this update ends)
  // is for messages. The communicator's error on failure, with the
  // parameters not updated; INVALID_ARGUMENT "loss is not finite at step N
  // of <label>: ..." when a summed part (the first is the loss) or the
  // gradients' global norm (when clipping) is NaN or infinite: the run has
  // diverged, the parameters are not updated, and every rank returns the
  // same error (the values are the gang's sums). The check reuses the values
  // read back for logging and clipping: no extra device synchronisation.
  absl::StatusOr<std::vector<double>> Finish(const std::vector<double>& local_parts,
                                             int64_t step = 0);

  // OK when every parameter is finite, else INVALID_ARGUMENT "parameters are
  // not finite after step N of <label>". One device synchronisation; call
  // it before a prompt is saved (an update with finite gradients can still
  // overflow, e.g. under a huge weight decay).
  absl::Status CheckParametersFinite(int64_t step) const;

  // AdamW's state per parameter, in the order of `params`; tensors are
  // detached clones.
  std::vector<AdamWSlot> ExportState() const;

  // Replaces AdamW's state (as ExportState gives it, on any device).
  // INVALID_ARGUMENT when the number of slots or a tensor's shape does not
  // fit the parameters; the state is then unchanged.
  absl::Status ImportState(const std::vector<AdamWSlot>& slots);

  const std::vector<at::Tensor>& params() const { return params_; }

 private:
  std::vector<at::Tensor> params_;
  std::string label_;
  double max_grad_norm_;
  Communicator* comm_;
  at::TensorOptions reduce_options_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_UPDATE_STEP_H_
