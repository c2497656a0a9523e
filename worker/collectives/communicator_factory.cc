#include "worker/collectives/communicator_factory.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/collectives/gloo_communicator.h"

#ifdef MPT_WITH_NCCL
#include "worker/collectives/nccl_communicator.h"
#endif

namespace mpt {

bool NcclAvailable() {
#ifdef MPT_WITH_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(absl::string_view kind, int rank,
                                                               int world_size,
                                                               RendezvousStore* store,
                                                               const CommunicatorOptions& options) {
  if (kind == "local") {
    if (world_size != 1 || rank != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "communicator \"local\" is for world size 1; got rank ", rank, " of ", world_size,
          " (use \"gloo\" or \"nccl\")"));
    }
    return std::unique_ptr<Communicator>(new LocalCommunicator());
  }
  if (kind == "gloo") {
    GlooOptions gloo;
    gloo.hostname = options.hostname;
    gloo.interface = options.interface;
    gloo.timeout = options.timeout;
    gloo.key_prefix = options.key_prefix;
    return GlooCommunicator::Create(rank, world_size, store, gloo);
  }
  if (kind == "nccl") {
#ifdef MPT_WITH_NCCL
    NcclOptions nccl;
    nccl.device = options.cuda_device;
    nccl.timeout = options.timeout;
    nccl.key_prefix = options.key_prefix;
    return NcclCommunicator::Create(rank, world_size, store, nccl);
#else
    return absl::UnimplementedError(
        "communicator \"nccl\" is not in this build: it was built against a CPU-only libtorch. "
        "Build with MPT_LIBTORCH pointing at a CUDA libtorch (for example a torch wheel's torch/ "
        "folder), or use \"gloo\"");
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown communicator \"", kind, "\"; expected \"local\", \"gloo\" or \"nccl\""));
}

}  // namespace mpt
