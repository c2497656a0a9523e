// ThreadGroup: ranks that are threads sum and broadcast like a gang, give
// every rank the same bits, and an abort frees ranks that wait.
#include "worker/collectives/thread_group.h"

#include <ATen/ATen.h>

#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace mpt {
namespace {

// Runs body(rank) on one thread per rank of `group` and waits for all.
void OnEveryRank(ThreadGroup& group, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < group.size(); ++r) threads.emplace_back(body, r);
  for (std::thread& t : threads) t.join();
}

TEST(ThreadGroupTest, AllReduceSumsInRankOrderAndEveryRankGetsTheSameBits) {
  ThreadGroup group(3);
  std::vector<std::vector<at::Tensor>> tensors(3);
  for (int r = 0; r < 3; ++r) {
    at::Tensor a = at::randn({5, 7}, at::kFloat) * (r + 1);
    at::Tensor b = at::full({2}, static_cast<double>(r), at::kDouble);
    tensors[r] = {a, b};
  }
  at::Tensor expected_a =
      tensors[0][0].clone().add_(tensors[1][0]).add_(tensors[2][0]);  // rank order
  std::vector<absl::Status> status(3);
  // Several rounds: the barriers are reused.
  OnEveryRank(group, [&](int r) {
    Communicator* c = group.rank(r);
    EXPECT_EQ(c->rank(), r);
    EXPECT_EQ(c->world_size(), 3);
    status[r] = c->AllReduceSum(tensors[r]);
    for (int round = 0; round < 20 && status[r].ok(); ++round) {
      std::vector<at::Tensor> one = {at::ones({3})};
      status[r] = c->AllReduceSum(one);
      if (!at::equal(one[0], at::full({3}, 3.0))) status[r] = absl::InternalError("bad sum");
    }
  });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(status[r].ok()) << r << ": " << status[r];
    EXPECT_TRUE(at::equal(tensors[r][0], expected_a)) << r;
    EXPECT_TRUE(at::equal(tensors[r][1], at::full({2}, 3.0, at::kDouble))) << r;
  }
}

TEST(ThreadGroupTest, BroadcastCopiesTheRootsTensors) {
  ThreadGroup group(2);
  std::vector<std::vector<at::Tensor>> tensors = {{at::zeros({4})}, {at::arange(4.0)}};
  std::vector<absl::Status> status(2);
  OnEveryRank(group, [&](int r) { status[r] = group.rank(r)->Broadcast(tensors[r], 1); });
  EXPECT_TRUE(status[0].ok()) << status[0];
  EXPECT_TRUE(status[1].ok()) << status[1];
  EXPECT_TRUE(at::equal(tensors[0][0], at::arange(4.0)));
  std::vector<at::Tensor> t = {at::zeros({1})};
  EXPECT_EQ(group.rank(0)->Broadcast(t, 2).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ThreadGroupTest, MismatchedTensorsAreAnErrorOnEveryRank) {
  ThreadGroup group(2);
  std::vector<std::vector<at::Tensor>> tensors = {{at::zeros({4})}, {at::zeros({5})}};
  std::vector<absl::Status> status(2);
  OnEveryRank(group, [&](int r) { status[r] = group.rank(r)->AllReduceSum(tensors[r]); });
  EXPECT_EQ(status[0].code(), absl::StatusCode::kInvalidArgument) << status[0];
  EXPECT_EQ(status[1].code(), absl::StatusCode::kInvalidArgument) << status[1];
}

TEST(ThreadGroupTest, AbortFreesAWaitingRankAndLaterCalls) {
  ThreadGroup group(2);
  absl::Status waited;
  absl::Notification returned;
  std::thread waiter([&] {
    std::vector<at::Tensor> t = {at::ones({2})};
    waited = group.rank(0)->AllReduceSum(t);  // rank 1 never comes
    returned.Notify();
  });
  EXPECT_FALSE(returned.WaitForNotificationWithTimeout(absl::Milliseconds(100)));
  group.rank(1)->Abort();
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kAborted) << waited;
  std::vector<at::Tensor> t = {at::ones({2})};
  EXPECT_EQ(group.rank(1)->AllReduceSum(t).code(), absl::StatusCode::kAborted);
}

TEST(ThreadGroupTest, OneRankIsANoOp) {
  ThreadGroup group(1);
  std::vector<at::Tensor> t = {at::ones({2})};
  EXPECT_TRUE(group.rank(0)->AllReduceSum(t).ok());
  EXPECT_TRUE(at::equal(t[0], at::ones({2})));
}

}  // namespace
}  // namespace mpt
