#include "worker/training/teacher_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace mpt {
namespace {

TokenizedExample Example(std::vector<int> input, std::vector<int> target, int task) {
  TokenizedExample e;
  e.input_ids = std::move(input);
  e.target_ids = std::move(target);
  e.task_id = task;
  return e;
}

// A fake LM head: logits [N, L, 5] from hidden states [N, L, 3].
at::Tensor FakeHead(const at::Tensor& hidden) {
  return hidden.narrow(-1, 0, 1) * 3 - hidden.narrow(-1, 2, 1) + at::arange(5, at::kFloat);
}

// A fake teacher whose outputs depend only on the row's own tokens, and
// which counts the rows it ran on; its logits are FakeHead of its hidden
// states, as a model's are its LM head's.
struct FakeTeacher {
  int64_t rows_run = 0;
  TeacherOutputs operator()(const Batch& rows) {
    rows_run += rows.size();
    const int64_t b = rows.size(), l = rows.labels.size(1);
    at::Tensor sum = rows.input_ids.mul(rows.attention_mask).sum(1).to(at::kFloat);  // [B]
    at::Tensor base = sum.view({b, 1, 1}) + rows.task_ids.to(at::kFloat).view({b, 1, 1}) * 1000 +
                      rows.labels.clamp_min(0).to(at::kFloat).view({b, l, 1});
    TeacherOutputs out;
    out.hidden = base * 2 + at::arange(3, at::kFloat).view({1, 1, 3});
    out.logits = FakeHead(out.hidden);
    return out;
  }
};

void ExpectRealRowsEqual(const TeacherOutputs& a, const TeacherOutputs& b, const Batch& batch) {
  at::Tensor mask = batch.labels.ne(-100).unsqueeze(-1);
  EXPECT_TRUE(at::equal(a.logits * mask, b.logits * mask));
  EXPECT_TRUE(at::equal(a.hidden * mask, b.hidden * mask));
}

class TeacherCacheTest : public ::testing::Test {
 protected:
  std::vector<TokenizedExample> examples_ = {
      Example({5, 6, 1}, {7, 1}, 0), Example({8, 1}, {9, 10, 11, 1}, 1),
      Example({5, 6, 7, 8, 1}, {1}, 0), Example({5, 6, 1}, {7, 1}, 1)};  // last: other task
  Batch Rows(std::vector<int> which) {
    std::vector<const TokenizedExample*> p;
    for (int i : which) p.push_back(&examples_[i]);
    return Collate(p, 0);
  }
};

TEST_F(TeacherCacheTest, GivesTheTeachersOutputsAndRunsEachExampleOnce) {
  TeacherCache cache(TeacherCache::kDefaultMaxBytes);
  FakeTeacher teacher;
  auto forward = [&](const Batch& rows) { return teacher(rows); };
  Batch first = Rows({0, 1});
  ExpectRealRowsEqual(cache.Get(first, forward, FakeHead), FakeTeacher()(first), first);
  EXPECT_EQ(teacher.rows_run, 2);
  // Two cached, two new (one of them the same tokens under another task).
  Batch second = Rows({1, 2, 0, 3});
  ExpectRealRowsEqual(cache.Get(second, forward, FakeHead), FakeTeacher()(second), second);
  EXPECT_EQ(teacher.rows_run, 4);
  EXPECT_EQ(cache.hits(), 2);
  EXPECT_EQ(cache.misses(), 4);
  // All cached now.
  Batch third = Rows({3, 2, 1, 0});
  ExpectRealRowsEqual(cache.Get(third, forward, FakeHead), FakeTeacher()(third), third);
  EXPECT_EQ(teacher.rows_run, 4);
  EXPECT_EQ(cache.hits(), 6);
  // fp32: (target tokens) * 3 hidden * 4 bytes, summed: the logits are not
  // stored.
  EXPECT_EQ(cache.bytes(), (2 + 4 + 1 + 2) * 3 * 4);
}

TEST_F(TeacherCacheTest, OverTheBoundTheTeachersRunEveryTime) {
  TeacherCache cache(/*max_bytes=*/2 * 3 * 4);  // room for one 2-token row
  FakeTeacher teacher;
  auto forward = [&](const Batch& rows) { return teacher(rows); };
  Batch batch = Rows({0, 1, 2});
  for (int i = 0; i < 3; ++i) {
    ExpectRealRowsEqual(cache.Get(batch, forward, FakeHead), FakeTeacher()(batch), batch);
  }
  EXPECT_EQ(cache.bytes(), 2 * 3 * 4);
  EXPECT_EQ(teacher.rows_run, 3 + 2 + 2);  // row 0 cached after the first step
}

// Without stored logits, the cached rows' logits are rebuilt by the head at
// their real target positions only: one call, no padded position.
TEST_F(TeacherCacheTest, TheHeadSeesOnlyRealPositions) {
  TeacherCache cache(TeacherCache::kDefaultMaxBytes);
  FakeTeacher teacher;
  auto forward = [&](const Batch& rows) { return teacher(rows); };
  std::vector<std::vector<int64_t>> head_shapes;
  auto head = [&](const at::Tensor& hidden) {
    head_shapes.push_back(hidden.sizes().vec());
    return FakeHead(hidden);
  };
  Batch all = Rows({0, 1, 2, 3});  // width 4; real lengths 2, 4, 1, 2
  cache.Get(all, forward, head);
  EXPECT_TRUE(head_shapes.empty());  // the teachers' own logits
  Batch again = Rows({2, 0, 3});     // width 2, all cached
  ExpectRealRowsEqual(cache.Get(again, forward, head), FakeTeacher()(again), again);
  ASSERT_EQ(head_shapes.size(), 1u);
  EXPECT_EQ(head_shapes[0], (std::vector<int64_t>{1, 1 + 2 + 2, 3}));
  // One cached row among new ones: the head runs on that row alone.
  TeacherCache fresh(TeacherCache::kDefaultMaxBytes);
  fresh.Get(Rows({1}), forward, head);
  Batch mixed = Rows({0, 1, 2});
  ExpectRealRowsEqual(fresh.Get(mixed, forward, head), FakeTeacher()(mixed), mixed);
  ASSERT_EQ(head_shapes.size(), 2u);
  EXPECT_EQ(head_shapes[1], (std::vector<int64_t>{1, 4, 3}));
}

// With keep_logits the logits are stored with the hidden states, counted
// in the bound, and never rebuilt by the head.
TEST_F(TeacherCacheTest, KeepLogitsStoresThemAndNeverCallsTheHead) {
  TeacherCache cache(TeacherCache::kDefaultMaxBytes, /*keep_logits=*/true);
  FakeTeacher teacher;
  auto forward = [&](const Batch& rows) { return teacher(rows); };
  int head_calls = 0;
  auto head = [&](const at::Tensor& hidden) {
    ++head_calls;
    return FakeHead(hidden);
  };
  Batch first = Rows({0, 1});
  ExpectRealRowsEqual(cache.Get(first, forward, head), FakeTeacher()(first), first);
  Batch second = Rows({1, 2, 0, 3});
  ExpectRealRowsEqual(cache.Get(second, forward, head), FakeTeacher()(second), second);
  Batch third = Rows({3, 2, 1, 0});
  ExpectRealRowsEqual(cache.Get(third, forward, head), FakeTeacher()(third), third);
  EXPECT_EQ(head_calls, 0);
  EXPECT_EQ(cache.hits(), 6);
  // (target tokens) * (5 logits + 3 hidden) * 4 bytes.
  EXPECT_EQ(cache.bytes(), (2 + 4 + 1 + 2) * 8 * 4);
}

// The choice RunDistillation makes: logits kept exactly when every
// example's fit.
TEST(TeacherCacheForExamplesTest, KeepsLogitsWhenEverythingFits) {
  // 100 target tokens of (1000 + 24) fp32 values: 409,600 bytes.
  EXPECT_TRUE(TeacherCache::ForExamples(409600, 100, 1000, 24, 4)->keep_logits());
  EXPECT_FALSE(TeacherCache::ForExamples(409599, 100, 1000, 24, 4)->keep_logits());
  EXPECT_FALSE(TeacherCache::ForExamples(0, 100, 1000, 24, 4)->keep_logits());
}

TEST_F(TeacherCacheTest, ZeroBytesMeansNoCache) {
  TeacherCache cache(0);
  FakeTeacher teacher;
  Batch batch = Rows({0, 1});
  cache.Get(
      batch, [&](const Batch& rows) { return teacher(rows); }, FakeHead);
  cache.Get(
      batch, [&](const Batch& rows) { return teacher(rows); }, FakeHead);
  EXPECT_EQ(teacher.rows_run, 4);
  EXPECT_EQ(cache.bytes(), 0);
}

// Thread ranks share one cache: threads getting overlapping batches at once
// all see the teachers' outputs, every example ends up stored once, and
// the counts add up.
TEST_F(TeacherCacheTest, ThreadsShareOneCache) {
  TeacherCache cache(TeacherCache::kDefaultMaxBytes);
  std::atomic<int64_t> rows_run{0};
  auto forward = [&](const Batch& rows) {
    rows_run += rows.size();
    return FakeTeacher()(rows);
  };
  const std::vector<std::vector<int>> batches = {{0, 1}, {1, 2, 3}, {3, 0}, {2}};
  std::atomic<int> wrong{0};
  std::atomic<int64_t> asked{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        Batch b = Rows(batches[(t + round) % batches.size()]);
        asked += b.size();
        TeacherOutputs got = cache.Get(b, forward, FakeHead);
        TeacherOutputs want = FakeTeacher()(b);
        at::Tensor mask = b.labels.ne(-100).unsqueeze(-1);
        if (!at::equal(got.logits * mask, want.logits * mask) ||
            !at::equal(got.hidden * mask, want.hidden * mask)) {
          ++wrong;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(cache.hits() + cache.misses(), asked.load());
  EXPECT_EQ(cache.misses(), rows_run.load());
  EXPECT_GE(rows_run.load(), 4);     // each of the four examples at least once
  EXPECT_LT(rows_run.load(), 4 * 4);  // and far from every time
  const int64_t one_each = cache.bytes();
  TeacherCache alone(TeacherCache::kDefaultMaxBytes);
  FakeTeacher teacher;
  alone.Get(
      Rows({0, 1, 2, 3}), [&](const Batch& rows) { return teacher(rows); }, FakeHead);
  EXPECT_EQ(one_each, alone.bytes());
}

TEST_F(TeacherCacheTest, SelectRowsTrimsPadding) {
  Batch batch = Rows({2, 0});
  Batch one = SelectRows(batch, {1});
  EXPECT_EQ(one.input_ids.size(1), 3);
  EXPECT_EQ(one.labels.size(1), 2);
  EXPECT_EQ(one.input_tokens, 3);
  EXPECT_EQ(one.target_tokens, 2);
  EXPECT_EQ(TeacherCache::RowKey(one, 0), TeacherCache::RowKey(batch, 1));
  EXPECT_NE(TeacherCache::RowKey(Rows({3}), 0), TeacherCache::RowKey(Rows({0}), 0));
}

}  // namespace
}  // namespace mpt
