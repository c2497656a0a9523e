// Independent training runs side by side on a CPU, one core each.
//
// On a CPU a prompt-tuning step keeps one core busy most of the time and
// the others only part of it: the element-wise, softmax and norm kernels
// run on the calling thread, and only the matrix products use BLAS's other
// threads. Runs that share nothing but the frozen model (the source tasks
// of one mpt_train call, the stages of a worker's pack) therefore finish
// sooner side by side, each on its own thread with one compute thread, than
// one after another with every core (measured: docs/MEASUREMENTS.md, "Lanes"). Each run
// computes exactly what it computes alone with one compute thread.
//
//   std::vector<absl::Status> done =
//       RunInLanes(2, tasks.size(), device, [&](size_t i) { return Train(i); });
//
// Each lane is a thread that takes the next index until none is left, so
// runs start in index order. Inside RunInLanes libtorch and BLAS run one
// thread each (OneComputeThreadScope), and every lane runs under the
// calling thread's autocast mode. With lanes <= 1 or n <= 1 every run
// happens on the calling thread, in order, and nothing is changed.
//
// A single run uses lanes too: mpt_stages splits it into data-parallel
// ranks that are threads (worker/collectives/thread_group.h), one lane per
// rank, each computing its share of every batch.
//
// Memory: each lane holds one run's activations, so the peak grows with
// the number of lanes (the model's weights are shared).
//
// Thread-safety: `run` is called from several threads at once; whatever it
// shares must be thread-safe (a loaded model is). SerialProgressSink makes
// a caller's sink safe to share.
#ifndef MPT_WORKER_TRAINING_LANES_H_
#define MPT_WORKER_TRAINING_LANES_H_

#include <cstddef>
#include <functional>
#include <vector>

#include <c10/core/Device.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/progress/progress.h"

namespace mpt {

// Runs run(0), ..., run(n - 1) on min(lanes, n) threads and returns their
// statuses in index order. An exception that escapes `run` becomes that
// index's INTERNAL status; the other runs go on. `device` is the device the
// runs compute on (its autocast mode is passed on to the lanes); lanes are
// meant for the CPU.
std::vector<absl::Status> RunInLanes(int lanes, size_t n, c10::Device device,
                                     const std::function<absl::Status(size_t)>& run);

// Forwards every event to `inner` while holding `mu`, so that lanes can
// share a sink that is not thread-safe (and several such sinks can share
// one mutex). Both are borrowed.
class SerialProgressSink final : public ProgressSink {
 public:
  SerialProgressSink(ProgressSink* inner, absl::Mutex* mu) : inner_(inner), mu_(mu) {}
  void OnEvent(const ProgressEvent& event) override {
    absl::MutexLock lock(mu_);
    inner_->OnEvent(event);
  }

 private:
  ProgressSink* inner_;
  absl::Mutex* mu_;
};

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_LANES_H_
