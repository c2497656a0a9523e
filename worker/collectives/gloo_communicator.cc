#include "worker/collectives/gloo_communicator.h"

#include <ATen/core/grad_mode.h>
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/tcp/pair.h>

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/collectives/tensor_packing.h"

namespace mpt {
namespace {

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Gloo's TCP transport writes with writev(2): writing into a connection
// that a dead peer has closed raises SIGPIPE, whose default action ends the
// process before Gloo can report the error. Ignore it unless the program
// chose its own handling.
void IgnoreSigpipeUnlessHandled() {
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
  if (current.sa_handler != SIG_DFL || (current.sa_flags & SA_SIGINFO) != 0) return;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

// Gloo's view of a RendezvousStore. Gloo's store interface reports failure
// by throwing; the adapter throws gloo::IoException and keeps the store's
// status so that Create can return it with its own code.
class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(RendezvousStore* store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s = store_->Set(prefix_ + key, std::string(data.begin(), data.end()));
    if (!s.ok()) Fail(std::move(s));
  }

  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::vector<std::string>> values = store_->Get({prefix_ + key}, timeout_);
    if (!values.ok()) Fail(values.status());
    const std::string& v = values->front();
    return std::vector<char>(v.begin(), v.end());
  }

  void wait(const std::vector<std::string>& keys) override { Wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    Wait(keys, timeout.count() > 0 ? absl::Milliseconds(timeout.count()) : timeout_);
  }

  // The store's first error; OK when it never failed.
  const absl::Status& error() const { return error_; }

 private:
  void Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
    std::vector<std::string> full;
    full.reserve(keys.size());
    for (const std::string& k : keys) full.push_back(prefix_ + k);
    absl::StatusOr<std::vector<std::string>> values = store_->Get(full, timeout);
    if (!values.ok()) Fail(values.status());
  }

  [[noreturn]] void Fail(absl::Status status) {
    if (error_.ok()) error_ = status;
    throw gloo::IoException(std::string(status.message()));
  }

  RendezvousStore* store_;
  const std::string prefix_;
  const absl::Duration timeout_;
  absl::Status error_;
};

// The tensors of one dtype packed into one contiguous buffer (or, for a
// single contiguous tensor, the tensor itself).
absl::Status CheckTensors(const std::vector<at::Tensor>& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("gloo: tensor ", i, " is undefined"));
    }
    if (!t.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gloo: tensor ", i, " is on ", t.device().str(), "; Gloo reduces CPU tensors only"));
    }
    if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) {
      return absl::InvalidArgumentError(absl::StrCat("gloo: tensor ", i, " has dtype ",
                                                     c10::toString(t.scalar_type()),
                                                     "; only float and double are supported"));
    }
  }
  return absl::OkStatus();
}

// Gloo's TCP pair keeps signalExceptionExternal(), the call its own
// timeout path makes to fail a pair from outside the I/O thread, protected.
// A using-declaration in a derived class names it publicly; the member
// pointer taken through it is a pointer to the base's member, so it is
// called on Gloo's own pairs. The class is never instantiated.
struct PairAbortAccess : gloo::transport::tcp::Pair {
  using gloo::transport::tcp::Pair::signalExceptionExternal;
};

}  // namespace

struct GlooCommunicator::Group {
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::chrono::milliseconds timeout{0};
  uint32_t next_tag = 0;
};

absl::StatusOr<std::unique_ptr<Communicator>> GlooCommunicator::Create(
    int rank, int world_size, RendezvousStore* store, const GlooOptions& options) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: world size ", world_size, " < 1"));
  }
  if (rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", rank, " is outside [0, ", world_size, ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("gloo: the timeout must be positive");
  }
  if (store == nullptr) return absl::InvalidArgumentError("gloo: no rendezvous store");

  IgnoreSigpipeUnlessHandled();
  auto group = std::make_unique<Group>();
  group->timeout = ToChrono(options.timeout);
  gloo::transport::tcp::attr attr;
  std::string where;
  if (!options.interface.empty()) {
    attr.iface = options.interface;
    where = absl::StrCat("interface ", options.interface);
  } else {
    attr.hostname = options.hostname;
    where = absl::StrCat("host ", options.hostname);
  }
  try {
    group->device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: cannot listen on ", where, ": ", e.what()));
  }

  StoreAdapter adapter(store, options.key_prefix, options.timeout);
  try {
    group->context = std::make_shared<gloo::rendezvous::Context>(rank, world_size);
    group->context->setTimeout(group->timeout);
    group->context->connectFullMesh(adapter, group->device);
  } catch (const std::exception& e) {
    if (!adapter.error().ok()) {
      return absl::Status(adapter.error().code(),
                          absl::StrCat("gloo: rank ", rank, " of ", world_size,
                                       " forming the group: ", adapter.error().message()));
    }
    return absl::UnavailableError(absl::StrCat("gloo: rank ", rank, " of ", world_size,
                                               " connecting to its peers: ", e.what()));
  }
  return std::unique_ptr<Communicator>(new GlooCommunicator(rank, world_size, std::move(group)));
}

GlooCommunicator::GlooCommunicator(int rank, int world_size, std::unique_ptr<Group> group)
    : rank_(rank), world_size_(world_size), group_(std::move(group)) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::AllReduceSum(std::vector<at::Tensor>& tensors) {
  return Run(Op::kAllReduceSum, tensors, 0);
}

absl::Status GlooCommunicator::Broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: broadcast root ", root, " is outside [0, ", world_size_, ")"));
  }
  return Run(Op::kBroadcast, tensors, root);
}

void GlooCommunicator::Abort() {
  if (aborted_.exchange(true)) return;
  // The same path Gloo takes when a collective times out: every pair gets
  // the exception, wakes the buffers waiting on it and closes its socket.
  // Pairs lock themselves, so this may run while another thread waits.
  for (int i = 0; i < world_size_; ++i) {
    if (i == rank_) continue;
    try {
      auto* pair = dynamic_cast<gloo::transport::tcp::Pair*>(group_->context->getPair(i).get());
      if (pair != nullptr) {
        (pair->*&PairAbortAccess::signalExceptionExternal)("the collective was aborted");
      }
    } catch (const std::exception&) {
      // A pair that is already gone needs no signal.
    }
  }
}

absl::Status GlooCommunicator::Run(Op op, std::vector<at::Tensor>& tensors, int root) {
  const char* name = op == Op::kAllReduceSum ? "all-reduce" : "broadcast";
  auto aborted = [&] {
    broken_ = absl::AbortedError(absl::StrCat("gloo: rank ", rank_, " of ", world_size_, ": ",
                                              name, ": the group was aborted"));
    return broken_;
  };
  if (!broken_.ok()) return broken_;
  if (aborted_.load()) return aborted();
  RETURN_IF_ERROR(CheckTensors(tensors));
  try {
    // Gradients and parameters alike: the copies below are not part of any
    // autograd graph.
    at::NoGradGuard no_grad;
    std::vector<PackedTensors> packed = PackByDtype(tensors, {at::kFloat, at::kDouble});
    for (PackedTensors& p : packed) {
      const size_t n = static_cast<size_t>(p.buffer.numel());
      const uint32_t tag = group_->next_tag++;
      const bool is_float = p.buffer.scalar_type() == at::kFloat;
      if (op == Op::kAllReduceSum) {
        gloo::AllreduceOptions opts(group_->context);
        if (is_float) {
          opts.setOutput(p.buffer.data_ptr<float>(), n);
          opts.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
        } else {
          opts.setOutput(p.buffer.data_ptr<double>(), n);
          opts.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<double>));
        }
        opts.setTag(tag);
        opts.setTimeout(group_->timeout);
        gloo::allreduce(opts);
      } else {
        gloo::BroadcastOptions opts(group_->context);
        if (is_float) {
          opts.setOutput(p.buffer.data_ptr<float>(), n);
        } else {
          opts.setOutput(p.buffer.data_ptr<double>(), n);
        }
        opts.setRoot(root);
        opts.setTag(tag);
        opts.setTimeout(group_->timeout);
        gloo::broadcast(opts);
      }
      Unpack(p, tensors);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("gloo: ", name, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    // gloo::IoException for a lost peer or a timeout, gloo::EnforceNotMet
    // for a broken invariant inside Gloo: either way the group is unusable.
    if (aborted_.load()) return aborted();
    broken_ = absl::UnavailableError(
        absl::StrCat("gloo: rank ", rank_, " of ", world_size_, ": ", name, ": ", e.what()));
    return broken_;
  }
  return absl::OkStatus();
}

}  // namespace mpt
