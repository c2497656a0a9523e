#include "worker/training/lanes.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/model/autocast.h"
#include "worker/model/compute_threads.h"

namespace mpt {
namespace {

absl::Status RunCaught(const std::function<absl::Status(size_t)>& run, size_t i) {
  try {
    return run(i);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  } catch (...) {
    return absl::InternalError("an unknown exception");
  }
}

}  // namespace

std::vector<absl::Status> RunInLanes(int lanes, size_t n, c10::Device device,
                                     const std::function<absl::Status(size_t)>& run) {
  std::vector<absl::Status> statuses(n);
  if (lanes <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) statuses[i] = RunCaught(run, i);
    return statuses;
  }
  const AutocastMode autocast = CurrentAutocast(device);
  OneComputeThreadScope one_thread;
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  const size_t count = std::min(static_cast<size_t>(lanes), n);
  threads.reserve(count);
  for (size_t l = 0; l < count; ++l) {
    threads.emplace_back([&] {
      AutocastScope scope(device, autocast);
      for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        statuses[i] = RunCaught(run, i);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return statuses;
}

}  // namespace mpt
