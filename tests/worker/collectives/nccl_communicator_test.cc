// NcclCommunicator on one GPU (world size 1: NCCL refuses two ranks on one
// device), reached through the factory so that this file compiles in every
// build. It skips itself in builds against a CPU-only libtorch and on
// machines without a CUDA device; tagged "gpu", so CPU CI does not run it.
#include <torch/cuda.h>

#include <chrono>
#include <iostream>
#include <vector>

#include "gtest/gtest.h"
#include "worker/collectives/communicator_factory.h"
#include "worker/collectives/rendezvous_store.h"

namespace mpt {
namespace {

class NcclOneGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NcclAvailable()) GTEST_SKIP() << "built against a CPU-only libtorch";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    CommunicatorOptions options;
    options.timeout = absl::Seconds(60);
    options.cuda_device = 0;
    auto comm = MakeCommunicator("nccl", 0, 1, &store_, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = std::move(*comm);
  }

  InMemoryRendezvousStore store_;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclOneGpu, AllReduceOfOneRankKeepsValuesInPlace) {
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  at::Tensor base = at::arange(12, cuda.dtype(at::kFloat)).view({3, 4});
  at::Tensor transposed = base.t();  // non-contiguous: copied, reduced, written back
  at::Tensor doubles = at::full({5}, 0.5, cuda.dtype(at::kDouble));
  at::Tensor halves = at::ones({7}, cuda.dtype(at::kHalf));
  at::Tensor bf16 = at::ones({7}, cuda.dtype(at::kBFloat16));
  std::vector<at::Tensor> tensors = {transposed, doubles, halves, bf16};
  absl::Status s = comm_->AllReduceSum(tensors);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(at::equal(base.cpu(), at::arange(12, at::kFloat).view({3, 4})));
  EXPECT_TRUE(at::equal(doubles.cpu(), at::full({5}, 0.5, at::kDouble)));
  EXPECT_TRUE(at::equal(halves.cpu(), at::ones({7}, at::kHalf)));
  EXPECT_EQ(tensors[0].data_ptr(), transposed.data_ptr());
}

TEST_F(NcclOneGpu, BroadcastAndArgumentErrors) {
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  at::Tensor t = at::full({4}, 3.0f, cuda.dtype(at::kFloat));
  std::vector<at::Tensor> v = {t};
  ASSERT_TRUE(comm_->Broadcast(v, 0).ok());
  EXPECT_TRUE(at::equal(t.cpu(), at::full({4}, 3.0f, at::kFloat)));
  EXPECT_EQ(comm_->Broadcast(v, 1).code(), absl::StatusCode::kInvalidArgument);
  std::vector<at::Tensor> on_cpu = {at::ones({2})};
  EXPECT_EQ(comm_->AllReduceSum(on_cpu).code(), absl::StatusCode::kInvalidArgument);
  std::vector<at::Tensor> ints = {at::ones({2}, cuda.dtype(at::kInt))};
  EXPECT_EQ(comm_->AllReduceSum(ints).code(), absl::StatusCode::kInvalidArgument);
  // Argument errors leave the communicator usable.
  EXPECT_TRUE(comm_->AllReduceSum(v).ok());
}

TEST_F(NcclOneGpu, ManySmallAllReducesTakeLittleTime) {
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  std::vector<at::Tensor> grads = {at::ones({100, 768}, cuda), at::ones({2, 100}, cuda),
                                   at::ones({2, 768}, cuda)};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(comm_->AllReduceSum(grads).ok());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::cout << "100 all-reduces of a prompt's gradients (world size 1): " << ms << " ms"
            << std::endl;
}

}  // namespace
}  // namespace mpt
