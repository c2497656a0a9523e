#include "worker/data/batching.h"

#include <map>
#include <set>

#include "gtest/gtest.h"
#include "worker/training/losses.h"

namespace mpt {
namespace {

TEST(TruncateKeepEos, CutsAndKeepsEos) {
  EXPECT_EQ(TruncateKeepEos({5, 6, 7, 1}, 3, 1), (std::vector<int>{5, 6, 1}));
  EXPECT_EQ(TruncateKeepEos({5, 1}, 3, 1), (std::vector<int>{5, 1}));
  EXPECT_EQ(TruncateKeepEos({5, 6, 1}, 0, 1), (std::vector<int>{5, 6, 1}));
}

TEST(Collate, PadsInputsWithPadAndLabelsWithIgnore) {
  TokenizedExample a{{4, 5, 1}, {7, 1}, 0, "x"};
  TokenizedExample b{{6, 1}, {8, 9, 1}, 2, "y"};
  Batch batch = Collate({&a, &b}, /*pad_id=*/0);
  EXPECT_TRUE(batch.input_ids.equal(at::tensor({4, 5, 1, 6, 1, 0}, at::kLong).view({2, 3})));
  EXPECT_TRUE(batch.attention_mask.equal(at::tensor({1, 1, 1, 1, 1, 0}, at::kLong).view({2, 3})));
  EXPECT_TRUE(batch.labels.equal(
      at::tensor({int64_t{7}, int64_t{1}, kIgnoreIndex, int64_t{8}, int64_t{9}, int64_t{1}},
                 at::kLong)
          .view({2, 3})));
  EXPECT_TRUE(batch.task_ids.equal(at::tensor({0, 2}, at::kLong)));
  EXPECT_EQ(batch.input_tokens, 5);
  EXPECT_EQ(batch.target_tokens, 5);
}

TEST(SampleBatch, IsAFunctionOfSeedAndStep) {
  std::vector<int> sizes{5, 3};
  for (auto sampling : {TaskSampling::kProportional, TaskSampling::kUniform}) {
    auto a = SampleBatch(7, 3, 4, sizes, sampling);
    auto b = SampleBatch(7, 3, 4, sizes, sampling);
    auto c = SampleBatch(8, 3, 4, sizes, sampling);
    ASSERT_EQ(a.size(), 4u);
    bool same_as_c = true;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].task, b[i].task);
      EXPECT_EQ(a[i].index, b[i].index);
      EXPECT_LT(a[i].index, sizes[a[i].task]);
      same_as_c &= a[i].task == c[i].task && a[i].index == c[i].index;
    }
    EXPECT_FALSE(same_as_c) << "another seed should give another batch";
  }
}

TEST(SampleBatch, ProportionalVisitsEveryExampleOncePerEpoch) {
  std::vector<int> sizes{5, 3};  // 8 examples; batches of 4 -> 2 steps an epoch
  std::set<std::pair<int, int>> seen;
  for (int step = 0; step < 2; ++step) {
    for (const ExampleRef& r : SampleBatch(1, step, 4, sizes, TaskSampling::kProportional)) {
      EXPECT_TRUE(seen.insert({r.task, r.index}).second) << "example drawn twice in an epoch";
    }
  }
  EXPECT_EQ(seen.size(), 8u);
}

TEST(SampleBatch, UniformDrawsTasksEquallyOften) {
  std::vector<int> sizes{1000, 10};
  std::map<int, int> per_task;
  for (int step = 0; step < 200; ++step) {
    for (const ExampleRef& r : SampleBatch(3, step, 10, sizes, TaskSampling::kUniform)) {
      ++per_task[r.task];
    }
  }
  EXPECT_NEAR(per_task[0] / 2000.0, 0.5, 0.05);
  EXPECT_NEAR(per_task[1] / 2000.0, 0.5, 0.05);
}

TEST(ShardForRank, SplitsTheGlobalBatchWithoutOverlap) {
  auto global = SampleBatch(0, 0, 6, {10}, TaskSampling::kProportional);
  auto r0 = ShardForRank(global, 0, 2);
  auto r1 = ShardForRank(global, 1, 2);
  ASSERT_EQ(r0.size(), 3u);
  ASSERT_EQ(r1.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r0[i].index, global[2 * i].index);
    EXPECT_EQ(r1[i].index, global[2 * i + 1].index);
  }
}

}  // namespace
}  // namespace mpt
