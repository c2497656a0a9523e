// Picks the collective engine of a data-parallel group by name.
//
//   "local"  world size 1, no communication (LocalCommunicator)
//   "gloo"   CPU tensors between processes over TCP (GlooCommunicator)
//   "nccl"   CUDA tensors between GPUs (NcclCommunicator); only in builds
//            against a CUDA libtorch
//
// The worker daemon and the command-line trainer call this one function, so
// switching engines is a configuration change, not a code change.
#ifndef MPT_WORKER_COLLECTIVES_COMMUNICATOR_FACTORY_H_
#define MPT_WORKER_COLLECTIVES_COMMUNICATOR_FACTORY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {

struct CommunicatorOptions {
  // Gloo: the address this rank listens on and advertises; see
  // GlooOptions::hostname. Default "127.0.0.1" (one host only).
  std::string hostname = "127.0.0.1";
  // Gloo: a network interface to bind instead of `hostname`. Default empty.
  std::string interface;
  // Forming the group and, for Gloo, each collective; see
  // GlooOptions::timeout and NcclOptions::timeout. Default 30 minutes.
  absl::Duration timeout = absl::Minutes(30);
  // Prepended to every store key of the group. Default empty.
  std::string key_prefix;
  // NCCL: the CUDA device of this rank; -1 (default) takes the current
  // device.
  int cuda_device = -1;
};

// True when this build can make "nccl" communicators.
bool NcclAvailable();

// Builds and connects a communicator of `kind` ("local", "gloo", "nccl").
// `store` is only used while the group forms; it may be null for "local".
//
// Errors: INVALID_ARGUMENT for an unknown kind, for "local" with a world
// size other than 1, and for the engine's own argument errors;
// UNIMPLEMENTED for "nccl" in a build against a CPU-only libtorch; otherwise
// the engine's Create errors (DEADLINE_EXCEEDED, UNAVAILABLE, ...).
absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(absl::string_view kind, int rank,
                                                               int world_size,
                                                               RendezvousStore* store,
                                                               const CommunicatorOptions& options);

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_COMMUNICATOR_FACTORY_H_
