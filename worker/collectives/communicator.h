// Collective operations between the data-parallel ranks of a stage.
//
// One interface, several engines: a single-process version (world size 1),
// Gloo over TCP between CPU processes, and NCCL between GPUs. The trainer
// only sees this interface, so every test of the training logic runs without
// a GPU or a network.
//
// Calls are collective: every rank must make the same calls, in the same
// order, with tensors of the same shapes and dtypes. Not thread-safe, except
// Abort(), which any thread may call at any time.
#ifndef MPT_WORKER_COLLECTIVES_COMMUNICATOR_H_
#define MPT_WORKER_COLLECTIVES_COMMUNICATOR_H_

#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace mpt {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Replaces each tensor by the element-wise sum over all ranks. UNAVAILABLE
  // when a peer is gone; the tensors are then unspecified.
  virtual absl::Status AllReduceSum(std::vector<at::Tensor>& tensors) = 0;

  // Replaces each tensor on every rank by `root`'s.
  virtual absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root) = 0;

  // Breaks the group from any thread: a collective blocked on its peers
  // returns ABORTED promptly (well under a second), and so does every later
  // call. Used when the rank's work was cancelled while a peer is frozen or
  // unreachable, which a collective would otherwise wait out until its
  // timeout. Calling it again, or after the group broke, does nothing more.
  virtual void Abort() = 0;
};

// World size 1: every collective is a no-op.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(std::vector<at::Tensor>&) override { return absl::OkStatus(); }
  absl::Status Broadcast(std::vector<at::Tensor>&, int) override { return absl::OkStatus(); }
  // Nothing ever blocks.
  void Abort() override {}
};

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_COMMUNICATOR_H_
