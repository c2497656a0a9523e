// Collectives between GPUs with NCCL, one rank per GPU.
//
// Rank 0 makes NCCL's unique id and publishes it in the RendezvousStore; the
// other ranks read it there and every rank joins with ncclCommInitRank. From
// then on NCCL talks directly (NVLink, PCIe, InfiniBand or TCP sockets, as
// NCCL picks).
//
// Only compiled when libtorch is a CUDA build (see //worker:BUILD.bazel and
// third_party/libtorch.bzl); MakeCommunicator("nccl", ...) returns
// UNIMPLEMENTED elsewhere. NCCL's and CUDA's headers stay inside the .cc.
//
// NCCL refuses two ranks on one GPU, so a machine with one GPU can run this
// with world size 1 only; the multi-rank logic of the trainer is proved with
// GlooCommunicator through the same interface.
#ifndef MPT_WORKER_COLLECTIVES_NCCL_COMMUNICATOR_H_
#define MPT_WORKER_COLLECTIVES_NCCL_COMMUNICATOR_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {

struct NcclOptions {
  // The CUDA device of this rank; -1 (default) takes the current device.
  int device = -1;

  // How long forming the group may take, and how long one collective may
  // take before the communicator is aborted and the call fails with
  // UNAVAILABLE. Default 30 minutes.
  absl::Duration timeout = absl::Minutes(30);

  // Prepended to the store key of the unique id. Default empty.
  std::string key_prefix;
};

// Not thread-safe: one thread at a time calls a communicator, and every rank
// calls the same collectives in the same order (see Communicator).
//
// Tensors: CUDA tensors on this rank's device, of dtype float, double, half
// or bfloat16, any strides (non-contiguous ones go through a contiguous copy
// and are written back in place). Tensors of one dtype are packed into one
// buffer. The work is queued on the device's current stream
// (c10::cuda::getCurrentCUDAStream), so it is ordered after the kernels that
// produced the tensors; each call then waits for it to finish, polling
// NCCL's asynchronous error state, so that a dead or hung peer becomes an
// error status within the timeout instead of a hang.
//
// After a collective fails, the NCCL communicator is aborted and every
// later call returns the first error again. Form a new group.
class NcclCommunicator final : public Communicator {
 public:
  // Forms the group. `store` is used only during Create.
  //
  // Errors: INVALID_ARGUMENT for a rank outside [0, world_size), a
  // world_size < 1, a non-positive timeout or a device that does not exist;
  // DEADLINE_EXCEEDED when rank 0's unique id did not appear in the store,
  // or NCCL's initialisation did not finish, within the timeout;
  // UNAVAILABLE for NCCL system and remote errors; INTERNAL for other NCCL
  // or CUDA errors, with NCCL's or CUDA's message.
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(int rank, int world_size,
                                                              RendezvousStore* store,
                                                              const NcclOptions& options);

  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  // INVALID_ARGUMENT (nothing queued) when a tensor is undefined, not on
  // this rank's device or of another dtype; UNAVAILABLE when a peer is gone,
  // NCCL reports an error or the collective did not finish within the
  // timeout; INTERNAL for CUDA errors.
  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors) override;

  // As AllReduceSum; also INVALID_ARGUMENT when `root` is outside
  // [0, world_size).
  absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root) override;

  // Makes a call waiting for its collectives stop polling: the NCCL
  // communicator is aborted (ncclCommAbort, on the calling thread of the
  // collective) and the call returns ABORTED, as does every later call.
  // Thread-safe.
  void Abort() override { abort_requested_.store(true); }

  // The CUDA device this rank uses.
  int device() const { return device_; }

 private:
  struct Group;  // NCCL's communicator, kept out of this header.

  NcclCommunicator(int rank, int world_size, int device, absl::Duration timeout,
                   std::unique_ptr<Group> group);

  enum class Op { kAllReduceSum, kBroadcast };
  absl::Status Run(Op op, std::vector<at::Tensor>& tensors, int root);

  const int rank_;
  const int world_size_;
  const int device_;
  const absl::Duration timeout_;
  std::unique_ptr<Group> group_;
  absl::Status broken_;  // the first failed collective's error; OK until then
  std::atomic<bool> abort_requested_{false};
};

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_NCCL_COMMUNICATOR_H_
