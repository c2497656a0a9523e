// RunInLanes: every index runs once, side by side on as many threads as
// asked, with one compute thread each and the caller's autocast mode; an
// exception ends only its own run; one lane runs on the calling thread.
#include "worker/training/lanes.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/model/autocast.h"

namespace mpt {
namespace {

const c10::Device kCpu(c10::kCPU);

TEST(RunInLanesTest, EveryIndexOnceAndStatusesInOrder) {
  std::vector<std::atomic<int>> runs(7);
  std::vector<absl::Status> s = RunInLanes(3, runs.size(), kCpu, [&](size_t i) {
    runs[i].fetch_add(1);
    return i % 3 == 1 ? absl::NotFoundError(std::to_string(i)) : absl::OkStatus();
  });
  ASSERT_EQ(s.size(), runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].load(), 1) << i;
    if (i % 3 == 1) {
      EXPECT_EQ(s[i], absl::NotFoundError(std::to_string(i)));
    } else {
      EXPECT_TRUE(s[i].ok()) << i << ": " << s[i];
    }
  }
}

TEST(RunInLanesTest, LanesRunAtTheSameTime) {
  // Each of two runs waits for the other to have started: one after
  // another, the first would wait in vain.
  absl::Notification started[2];
  std::set<std::thread::id> threads;
  std::mutex mu;
  std::vector<absl::Status> s = RunInLanes(2, 2, kCpu, [&](size_t i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      threads.insert(std::this_thread::get_id());
    }
    started[i].Notify();
    return started[1 - i].WaitForNotificationWithTimeout(absl::Seconds(30))
               ? absl::OkStatus()
               : absl::DeadlineExceededError("the other lane never started");
  });
  EXPECT_TRUE(s[0].ok()) << s[0];
  EXPECT_TRUE(s[1].ok()) << s[1];
  EXPECT_EQ(threads.size(), 2u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
}

TEST(RunInLanesTest, NeverMoreLanesThanAsked) {
  std::atomic<int> running{0}, most{0};
  RunInLanes(2, 8, kCpu, [&](size_t) {
    const int now = running.fetch_add(1) + 1;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    running.fetch_sub(1);
    return absl::OkStatus();
  });
  EXPECT_GE(most.load(), 1);
  EXPECT_LE(most.load(), 2);
}

TEST(RunInLanesTest, OneLaneRunsOnTheCallingThreadInOrder) {
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<size_t> order;
  RunInLanes(1, 4, kCpu, [&](size_t i) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    order.push_back(i);
    return absl::OkStatus();
  });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3}));
  std::thread::id ran_on;
  RunInLanes(4, 1, kCpu, [&](size_t) {
    ran_on = std::this_thread::get_id();
    return absl::OkStatus();
  });
  EXPECT_EQ(ran_on, caller);
}

TEST(RunInLanesTest, AnExceptionEndsOnlyItsRun) {
  std::vector<absl::Status> s = RunInLanes(2, 4, kCpu, [&](size_t i) -> absl::Status {
    if (i == 1) throw std::runtime_error("boom");
    if (i == 2) at::ones({2, 3}).mm(at::ones({2, 3}));  // shapes do not fit: c10::Error
    return absl::OkStatus();
  });
  EXPECT_TRUE(s[0].ok());
  EXPECT_EQ(s[1], absl::InternalError("boom"));
  EXPECT_EQ(s[2].code(), absl::StatusCode::kInternal);
  EXPECT_NE(s[2].message().find("libtorch: "), std::string::npos) << s[2];
  EXPECT_TRUE(s[3].ok());
}

TEST(RunInLanesTest, LanesRunOneComputeThreadUnderTheCallersAutocast) {
  at::set_num_threads(2);
  std::atomic<int> wrong_threads{0}, bf16{0};
  {
    AutocastScope scope(kCpu, AutocastMode::kBf16);
    RunInLanes(2, 2, kCpu, [&](size_t) {
      if (at::get_num_threads() != 1) wrong_threads.fetch_add(1);
      if (at::mm(at::ones({2, 2}), at::ones({2, 2})).scalar_type() == at::kBFloat16) {
        bf16.fetch_add(1);
      }
      return absl::OkStatus();
    });
  }
  EXPECT_EQ(wrong_threads.load(), 0);
  EXPECT_EQ(bf16.load(), 2);
  EXPECT_EQ(at::get_num_threads(), 2);  // restored
  // Without autocast in the caller, none in the lanes.
  std::atomic<int> fp32{0};
  RunInLanes(2, 2, kCpu, [&](size_t) {
    if (at::mm(at::ones({2, 2}), at::ones({2, 2})).scalar_type() == at::kFloat) fp32.fetch_add(1);
    return absl::OkStatus();
  });
  EXPECT_EQ(fp32.load(), 2);
}

}  // namespace
}  // namespace mpt
