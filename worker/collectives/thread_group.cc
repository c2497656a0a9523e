#include "worker/collectives/thread_group.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace mpt {

class ThreadGroup::Rank final : public Communicator {
 public:
  Rank(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->size(); }
  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors) override {
    return group_->AllReduceSum(rank_, tensors);
  }
  absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root) override {
    return group_->Broadcast(rank_, tensors, root);
  }
  void Abort() override { group_->Abort(); }

 private:
  ThreadGroup* group_;
  int rank_;
};

ThreadGroup::ThreadGroup(int size) : size_(size < 1 ? 1 : size), slots_(size_, nullptr) {
  for (int r = 0; r < size_; ++r) ranks_.push_back(std::make_unique<Rank>(this, r));
}

ThreadGroup::~ThreadGroup() = default;

Communicator* ThreadGroup::rank(int r) const { return ranks_.at(r).get(); }

void ThreadGroup::Abort() {
  absl::MutexLock lock(&mu_);
  aborted_ = true;
}

absl::Status ThreadGroup::Arrive() {
  absl::MutexLock lock(&mu_);
  if (aborted_) return absl::AbortedError("the thread group was aborted");
  const int64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    return absl::OkStatus();
  }
  auto released = [this, generation]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return generation_ != generation || aborted_;
  };
  mu_.Await(absl::Condition(&released));
  if (generation_ == generation) return absl::AbortedError("the thread group was aborted");
  return absl::OkStatus();
}

absl::Status ThreadGroup::AllReduceSum(int rank, std::vector<at::Tensor>& tensors) {
  if (size_ == 1) return absl::OkStatus();
  slots_[rank] = &tensors;
  if (absl::Status s = Arrive(); !s.ok()) return s;
  std::vector<at::Tensor> sums;
  sums.reserve(tensors.size());
  absl::Status shapes = absl::OkStatus();
  for (size_t i = 0; i < tensors.size() && shapes.ok(); ++i) {
    at::Tensor sum;
    for (int r = 0; r < size_; ++r) {
      const std::vector<at::Tensor>& theirs = *slots_[r];
      if (theirs.size() != tensors.size() || !theirs[i].sizes().equals(tensors[i].sizes()) ||
          theirs[i].scalar_type() != tensors[i].scalar_type()) {
        shapes = absl::InvalidArgumentError(absl::StrCat(
            "thread group: rank ", r, "'s tensor ", i, " does not match rank ", rank, "'s"));
        break;
      }
      sum = r == 0 ? theirs[i].detach().clone() : sum.add_(theirs[i].detach());
    }
    sums.push_back(std::move(sum));
  }
  // Nobody reads another rank's tensors after this barrier.
  if (absl::Status s = Arrive(); !s.ok()) return s;
  if (!shapes.ok()) return shapes;
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].detach().copy_(sums[i]);
  return absl::OkStatus();
}

absl::Status ThreadGroup::Broadcast(int rank, std::vector<at::Tensor>& tensors, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("thread group: no rank ", root));
  }
  if (size_ == 1) return absl::OkStatus();
  slots_[rank] = &tensors;
  if (absl::Status s = Arrive(); !s.ok()) return s;
  std::vector<at::Tensor> copies;
  absl::Status shapes = absl::OkStatus();
  if (rank != root) {
    const std::vector<at::Tensor>& theirs = *slots_[root];
    if (theirs.size() != tensors.size()) {
      shapes = absl::InvalidArgumentError("thread group: broadcast of another tensor count");
    }
    for (size_t i = 0; i < tensors.size() && shapes.ok(); ++i) {
      if (!theirs[i].sizes().equals(tensors[i].sizes())) {
        shapes = absl::InvalidArgumentError(
            absl::StrCat("thread group: broadcast tensor ", i, " of another shape"));
        break;
      }
      copies.push_back(theirs[i].detach().clone());
    }
  }
  if (absl::Status s = Arrive(); !s.ok()) return s;
  if (!shapes.ok()) return shapes;
  for (size_t i = 0; i < copies.size(); ++i) tensors[i].detach().copy_(copies[i]);
  return absl::OkStatus();
}

}  // namespace mpt
