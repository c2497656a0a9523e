#include "worker/collectives/nccl_communicator.h"

#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/collectives/tensor_packing.h"

// Non-blocking communicators (ncclConfig_t, ncclInProgress,
// ncclCommGetAsyncError polling) came with NCCL 2.14; older NCCL joins with
// a blocking ncclCommInitRank, which cannot time out.
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
#define MPT_NCCL_NONBLOCKING 1
#else
#define MPT_NCCL_NONBLOCKING 0
#endif

namespace mpt {
namespace {

constexpr char kUniqueIdKey[] = "nccl_unique_id";

// How often a waiting call looks at CUDA's and NCCL's progress.
constexpr absl::Duration kPollInterval = absl::Microseconds(50);

// The one place where NCCL and CUDA results become statuses. ncclInProgress
// is not an error: a non-blocking communicator is still working and the
// caller waits for it (AwaitComm).
absl::Status ToStatus(ncclResult_t result, const char* expr) {
  if (result == ncclSuccess) return absl::OkStatus();
#if MPT_NCCL_NONBLOCKING
  if (result == ncclInProgress) return absl::OkStatus();
#endif
  std::string message = absl::StrCat(expr, ": ", ncclGetErrorString(result));
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&message, " (", last, ")");
#endif
  switch (result) {
    case ncclSystemError:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    case ncclRemoteError:
#endif
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
      return absl::InvalidArgumentError(message);
    case ncclInvalidUsage:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status ToStatus(cudaError_t result, const char* expr) {
  if (result == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(expr, ": ", cudaGetErrorName(result), ": ",
                                          cudaGetErrorString(result)));
}

// Evaluates a call that returns ncclResult_t or cudaError_t and returns its
// error as an absl::Status from the enclosing function; never aborts.
#define MPT_GPU_RETURN_IF_ERROR(expr)                                  \
  do {                                                                 \
    ::absl::Status mpt_gpu_status_ = ::mpt::ToStatus((expr), #expr);   \
    if (!mpt_gpu_status_.ok()) return mpt_gpu_status_;                 \
  } while (0)

absl::StatusOr<ncclDataType_t> NcclType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case at::kBFloat16:
      return ncclBfloat16;
#endif
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "nccl: dtype ", c10::toString(type), " is not supported (float, double, half, bfloat16)"));
  }
}

// Waits until a non-blocking communicator has finished what it was asked
// (joining, or queuing a group of collectives). DEADLINE_EXCEEDED when it
// is still busy at `deadline`.
absl::Status AwaitComm(ncclComm_t comm, absl::Time deadline) {
#if MPT_NCCL_NONBLOCKING
  while (true) {
    ncclResult_t state = ncclSuccess;
    MPT_GPU_RETURN_IF_ERROR(ncclCommGetAsyncError(comm, &state));
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return ToStatus(state, "ncclCommGetAsyncError");
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("nccl: the communicator did not finish in time");
    }
    absl::SleepFor(kPollInterval);
  }
#else
  (void)comm;
  (void)deadline;
  return absl::OkStatus();
#endif
}

}  // namespace

struct NcclCommunicator::Group {
  ncclComm_t comm = nullptr;
  cudaEvent_t done = nullptr;  // recorded after each call's work
};

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Create(
    int rank, int world_size, RendezvousStore* store, const NcclOptions& options) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: world size ", world_size, " < 1"));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl: rank ", rank, " is outside [0, ", world_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("nccl: the timeout must be positive");
  }
  if (store == nullptr) return absl::InvalidArgumentError("nccl: no rendezvous store");
  const absl::Time deadline = absl::Now() + options.timeout;

  int count = 0;
  MPT_GPU_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  int device = options.device;
  if (device < 0) MPT_GPU_RETURN_IF_ERROR(cudaGetDevice(&device));
  if (device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl: CUDA device ", device, " does not exist (", count, " devices)"));
  }
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));

  // Rank 0's unique id reaches the others through the store.
  ncclUniqueId id;
  const std::string key = options.key_prefix + kUniqueIdKey;
  if (rank == 0) {
    MPT_GPU_RETURN_IF_ERROR(ncclGetUniqueId(&id));
    RETURN_IF_ERROR(store->Set(key, std::string(reinterpret_cast<const char*>(&id), sizeof(id))));
  } else {
    ASSIGN_OR_RETURN(std::vector<std::string> values, store->Get({key}, options.timeout));
    if (values[0].size() != sizeof(id)) {
      return absl::InvalidArgumentError(absl::StrCat("nccl: the unique id in the store has ",
                                                     values[0].size(), " bytes, expected ",
                                                     sizeof(id)));
    }
    std::memcpy(&id, values[0].data(), sizeof(id));
  }

  auto group = std::make_unique<Group>();
#if MPT_NCCL_NONBLOCKING
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  MPT_GPU_RETURN_IF_ERROR(ncclCommInitRankConfig(&group->comm, world_size, id, rank, &config));
  absl::Status joined = AwaitComm(group->comm, deadline);
  if (!joined.ok()) {
    ncclCommAbort(group->comm);
    return absl::Status(joined.code(), absl::StrCat("nccl: rank ", rank, " of ", world_size,
                                                    " joining the group: ", joined.message()));
  }
#else
  MPT_GPU_RETURN_IF_ERROR(ncclCommInitRank(&group->comm, world_size, id, rank));
#endif
  absl::Status event = ToStatus(cudaEventCreateWithFlags(&group->done, cudaEventDisableTiming),
                                "cudaEventCreateWithFlags");
  if (!event.ok()) {
    ncclCommDestroy(group->comm);
    return event;
  }
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(rank, world_size, device, options.timeout, std::move(group)));
}

NcclCommunicator::NcclCommunicator(int rank, int world_size, int device, absl::Duration timeout,
                                   std::unique_ptr<Group> group)
    : rank_(rank),
      world_size_(world_size),
      device_(device),
      timeout_(timeout),
      group_(std::move(group)) {}

NcclCommunicator::~NcclCommunicator() {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  if (group_->done != nullptr) cudaEventDestroy(group_->done);
  if (group_->comm != nullptr) {
    // A healthy communicator has no work in flight (every call waits for
    // its own); a broken one may, and only abort returns then.
    if (broken_.ok()) {
      ncclCommDestroy(group_->comm);
    } else {
      ncclCommAbort(group_->comm);
    }
  }
}

absl::Status NcclCommunicator::AllReduceSum(std::vector<at::Tensor>& tensors) {
  return Run(Op::kAllReduceSum, tensors, 0);
}

absl::Status NcclCommunicator::Broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("nccl: broadcast root ", root, " is outside [0, ", world_size_, ")"));
  }
  return Run(Op::kBroadcast, tensors, root);
}

absl::Status NcclCommunicator::Run(Op op, std::vector<at::Tensor>& tensors, int root) {
  if (!broken_.ok()) return broken_;
  if (abort_requested_.load()) {
    if (group_->comm != nullptr) ncclCommAbort(group_->comm);
    group_->comm = nullptr;
    broken_ = absl::AbortedError(
        absl::StrCat("nccl: rank ", rank_, " of ", world_size_, ": the group was aborted"));
    return broken_;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.defined() || !t.is_cuda() || t.device().index() != device_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "nccl: tensor ", i, " is ", t.defined() ? t.device().str() : "undefined",
          "; this rank reduces tensors on cuda:", device_));
    }
    RETURN_IF_ERROR(NcclType(t.scalar_type()).status());
  }
  const char* name = op == Op::kAllReduceSum ? "all-reduce" : "broadcast";
  const absl::Time deadline = absl::Now() + timeout_;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  const cudaStream_t stream =
      c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();

  // Everything that fails after work may have been queued breaks the group.
  auto fail = [&](const absl::Status& s) {
    ncclCommAbort(group_->comm);
    group_->comm = nullptr;
    broken_ = absl::Status(s.code() == absl::StatusCode::kDeadlineExceeded
                               ? absl::StatusCode::kUnavailable
                               : s.code(),
                           absl::StrCat("nccl: rank ", rank_, " of ", world_size_, ": ", name,
                                        ": ", s.message()));
    return broken_;
  };

  std::vector<PackedTensors> packed;
  std::vector<ncclDataType_t> types;
  try {
    at::NoGradGuard no_grad;
    packed = PackByDtype(tensors, {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16});
    for (const PackedTensors& p : packed) {
      ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(p.dtype));
      types.push_back(type);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("nccl: ", name, ": ", e.what_without_backtrace()));
  }

  auto enqueue = [&]() -> absl::Status {
    MPT_GPU_RETURN_IF_ERROR(ncclGroupStart());
    for (size_t k = 0; k < packed.size(); ++k) {
      void* data = packed[k].buffer.data_ptr();
      const size_t n = static_cast<size_t>(packed[k].buffer.numel());
      if (op == Op::kAllReduceSum) {
        MPT_GPU_RETURN_IF_ERROR(
            ncclAllReduce(data, data, n, types[k], ncclSum, group_->comm, stream));
      } else {
        MPT_GPU_RETURN_IF_ERROR(
            ncclBroadcast(data, data, n, types[k], root, group_->comm, stream));
      }
    }
    MPT_GPU_RETURN_IF_ERROR(ncclGroupEnd());
    RETURN_IF_ERROR(AwaitComm(group_->comm, deadline));
    MPT_GPU_RETURN_IF_ERROR(cudaEventRecord(group_->done, stream));
    // Wait for the collectives themselves, watching NCCL for a failed peer.
    while (true) {
      const cudaError_t state = cudaEventQuery(group_->done);
      if (state == cudaSuccess) return absl::OkStatus();
      if (state != cudaErrorNotReady) return ToStatus(state, "cudaEventQuery");
      RETURN_IF_ERROR(AwaitComm(group_->comm, deadline));
      if (abort_requested_.load()) return absl::AbortedError("the group was aborted");
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "did not finish within ", absl::FormatDuration(timeout_), "; a peer is gone or hung"));
      }
      absl::SleepFor(kPollInterval);
    }
  };
  absl::Status done = enqueue();
  if (!done.ok()) return fail(done);

  try {
    at::NoGradGuard no_grad;
    for (const PackedTensors& p : packed) Unpack(p, tensors);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("nccl: ", name, ": ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

}  // namespace mpt
