// Data-parallel ranks that are threads of one process.
//
// On a CPU one training run does not keep several cores busy (the
// element-wise kernels run on the training thread alone; see
// worker/training/lanes.h), so a run can instead be split into ranks that are
// threads, one compute thread each, each computing its share of every batch
// as a gang rank does, with the gradients summed in memory here. The trainer
// sees an ordinary Communicator.
//
//   ThreadGroup group(2);
//   // thread r: PromptTrainer(..., group.rank(r), ...).Run(...)
//
// AllReduceSum adds the ranks' tensors in rank order on every rank, so every
// rank gets the same bits. Each call waits for every rank (two barriers);
// Abort() (from any thread) makes waiting and later calls return ABORTED, so
// that a rank that fails cannot leave the others waiting.
//
// Thread-safety: rank(r)'s communicator is used by one thread at a time, as
// any Communicator; Abort() may be called from any thread.
#ifndef MPT_WORKER_COLLECTIVES_THREAD_GROUP_H_
#define MPT_WORKER_COLLECTIVES_THREAD_GROUP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker/collectives/communicator.h"

namespace mpt {

class ThreadGroup {
 public:
  // `size` ranks, at least 1.
  explicit ThreadGroup(int size);
  ~ThreadGroup();
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;

  int size() const { return size_; }
  // Rank r's communicator, owned by the group (0 <= r < size()).
  Communicator* rank(int r) const;
  // Breaks the group (see above).
  void Abort();

 private:
  class Rank;
  friend class Rank;

  // Waits until every rank arrived (or the group broke: ABORTED).
  absl::Status Arrive();
  absl::Status AllReduceSum(int rank, std::vector<at::Tensor>& tensors);
  absl::Status Broadcast(int rank, std::vector<at::Tensor>& tensors, int root);

  const int size_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  absl::Mutex mu_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  // Each rank's tensors of the collective in progress; written by the rank
  // before the first barrier, read by all between the two.
  std::vector<std::vector<at::Tensor>*> slots_;
};

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_THREAD_GROUP_H_
