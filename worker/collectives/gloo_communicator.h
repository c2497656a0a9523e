// Collectives between CPU processes over Gloo's TCP transport.
//
//   GlooOptions options;
//   options.hostname = "10.0.0.7";        // what peers connect to
//   options.timeout = absl::Minutes(30);
//   ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
//                    GlooCommunicator::Create(rank, world_size, &store, options));
//   RETURN_IF_ERROR(comm->AllReduceSum(gradients));
//
// Every rank binds a TCP listener on its host, publishes the address in the
// RendezvousStore and connects to every other rank (a full mesh); after that
// the store is no longer used. Gloo's headers stay inside the .cc file.
#ifndef MPT_WORKER_COLLECTIVES_GLOO_COMMUNICATOR_H_
#define MPT_WORKER_COLLECTIVES_GLOO_COMMUNICATOR_H_

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

struct GlooOptions {
  // The address this rank listens on and advertises to its peers: a host
  // name or an IP address of this machine. Default "127.0.0.1", which only
  // works when every rank runs on the same host; on a cluster give the
  // host's address on the network the ranks share (for example the pod IP).
  std::string hostname = "127.0.0.1";

  // A network interface to bind instead (for example "eth0" or "ib0"); its
  // first address is used. Takes precedence over `hostname` when non-empty.
  // Default empty.
  std::string interface;

  // How long forming the group may take (waiting in the store for every
  // rank, then connecting), and how long one collective may wait for its
  // peers before it fails with UNAVAILABLE. A rank that evaluates or
  // checkpoints while the others wait at the next collective must finish
  // within this time. Default 30 minutes.
  absl::Duration timeout = absl::Minutes(30);

  // Prepended to every key this group writes to or reads from the store, so
  // that several groups can share one store. Default empty.
  std::string key_prefix;
};

// Not thread-safe: one thread at a time calls a communicator, and every rank
// calls the same collectives in the same order (see Communicator). Abort()
// is the exception: any thread may call it while another is in a
// collective.
//
// Tensors: CPU tensors of dtype float or double, any shape and any strides
// (non-contiguous ones are reduced through a contiguous copy and written
// back in place, so views of parameters or gradients stay valid). Tensors
// of one dtype are packed into one buffer, so a call costs one collective
// per dtype however many tensors it carries.
//
// After a collective fails, the group is broken: every later call returns
// the first error again without touching the network. Form a new group.
class GlooCommunicator final : public Communicator {
 public:
  // Forms the group. `store` is used only during Create and may be
  // destroyed afterwards.
  //
  // Side effect: when SIGPIPE still has its default action, Create sets it
  // to ignored for the whole process. Gloo writes to sockets with writev, and
  // a write into a connection that a dead peer closed would otherwise end
  // the process instead of returning UNAVAILABLE.
  //
  // Errors: INVALID_ARGUMENT for a rank outside [0, world_size), a
  // world_size < 1, a non-positive timeout, or a hostname / interface this
  // host cannot bind; DEADLINE_EXCEEDED (naming the missing keys) when some
  // rank did not publish its address within the timeout; UNAVAILABLE with
  // Gloo's message when connecting to a peer fails, or with the store's
  // message when the store fails.
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(int rank, int world_size,
                                                              RendezvousStore* store,
                                                              const GlooOptions& options);

  ~GlooCommunicator() override;
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  // INVALID_ARGUMENT (nothing sent) when a tensor is undefined, not on the
  // CPU or neither float nor double; UNAVAILABLE with Gloo's message when a
  // peer is gone, the connection fails or the peers did not join within the
  // timeout (the caller's remedy is the same: form a new group). On error the
  // tensors are unspecified.
  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors) override;

  // As AllReduceSum; also INVALID_ARGUMENT when `root` is outside
  // [0, world_size).
  absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root) override;

  // Signals an error on every connection of the group, which wakes a
  // collective waiting on a peer: it returns ABORTED, as does every later
  // call (the peers see the connections close and fail with UNAVAILABLE).
  // Thread-safe.
  void Abort() override;

 private:
  struct Group;  // Gloo's context, kept out of this header.

  GlooCommunicator(int rank, int world_size, std::unique_ptr<Group> group);

  enum class Op { kAllReduceSum, kBroadcast };
  absl::Status Run(Op op, std::vector<at::Tensor>& tensors, int root);

  const int rank_;
  const int world_size_;
  std::unique_ptr<Group> group_;
  absl::Status broken_;  // the first failed collective's error; OK until then
  std::atomic<bool> aborted_{false};
};

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_GLOO_COMMUNICATOR_H_
