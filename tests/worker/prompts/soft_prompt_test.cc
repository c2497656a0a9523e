#include "worker/prompts/soft_prompt.h"

#include <ATen/ATen.h>

#include "gtest/gtest.h"

namespace mpt {
namespace {

SoftPromptConfig Multitask(int tasks, int ranks = 1) {
  SoftPromptConfig c;
  c.kind = PromptKind::kMultitask;
  c.num_virtual_tokens = 2;
  c.num_transformer_submodules = 2;
  c.token_dim = 3;
  c.num_tasks = tasks;
  c.num_ranks = ranks;
  return c;
}

TEST(SoftPrompt, MultitaskForwardIsSharedTimesLowRankProduct) {
  SoftPromptConfig c = Multitask(2);
  at::Tensor shared = at::arange(12, at::kFloat).view({4, 3});
  at::Tensor cols = at::arange(8, at::kFloat).view({2, 4, 1});
  at::Tensor rows = at::arange(6, at::kFloat).view({2, 1, 3});
  auto prompt = SoftPrompt::FromTensors(c, shared, cols, rows);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  at::Tensor out = prompt->Forward(at::tensor({1, 0, 1}, at::kLong), 3);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 3}));
  for (int task : {0, 1}) {
    at::Tensor want = shared * at::mm(cols[task], rows[task]);
    EXPECT_TRUE(at::allclose(prompt->TaskPrompt(task), want));
  }
  EXPECT_TRUE(at::allclose(out[0], shared * at::mm(cols[1], rows[1])));
  EXPECT_TRUE(at::allclose(out[1], shared * at::mm(cols[0], rows[0])));
}

TEST(SoftPrompt, OnlyParametersReceiveGradients) {
  auto prompt = SoftPrompt::Random(Multitask(3), 1);
  ASSERT_TRUE(prompt.ok());
  at::Tensor out = prompt->Forward(at::tensor({2, 0}, at::kLong), 2);
  out.sum().backward();
  for (const at::Tensor& p : prompt->Parameters()) {
    EXPECT_TRUE(p.requires_grad());
    ASSERT_TRUE(p.grad().defined());
  }
  // Task 1 was not in the batch: its factors get no gradient.
  EXPECT_EQ(prompt->prefix_task_cols().grad()[1].abs().sum().item<double>(), 0.0);
  EXPECT_GT(prompt->prefix_task_cols().grad()[2].abs().sum().item<double>(), 0.0);
}

TEST(SoftPrompt, AFrozenSharedPromptLeavesOnlyTheFactorsToTrain) {
  auto prompt = SoftPrompt::Random(Multitask(2), 4);
  ASSERT_TRUE(prompt.ok());
  prompt->FreezeSharedPrompt();
  prompt->MoveTo(c10::Device(c10::kCPU));
  EXPECT_TRUE(prompt->shared_prompt_frozen());
  const std::vector<at::Tensor> params = prompt->Parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_TRUE(params[0].is_same(prompt->prefix_task_cols()));
  EXPECT_TRUE(params[1].is_same(prompt->prefix_task_rows()));
  EXPECT_FALSE(prompt->prompt_embeddings().requires_grad());
  prompt->Forward(at::tensor({0, 1}, at::kLong), 2).sum().backward();
  EXPECT_FALSE(prompt->prompt_embeddings().grad().defined());
  EXPECT_GT(prompt->prefix_task_rows().grad().abs().sum().item<double>(), 0.0);
  // Its values are still in the state dict that adapters are written from.
  EXPECT_EQ(prompt->StateDict().count("prompt_embeddings"), 1u);
  // A plain prompt has no factors: freezing it changes nothing.
  SoftPromptConfig plain = Multitask(1);
  plain.kind = PromptKind::kPromptTuning;
  auto p2 = SoftPrompt::Random(plain, 4);
  ASSERT_TRUE(p2.ok());
  p2->FreezeSharedPrompt();
  EXPECT_FALSE(p2->shared_prompt_frozen());
  EXPECT_EQ(p2->Parameters().size(), 1u);
}

TEST(SoftPrompt, TeachersMeanStartsEveryTaskAtTheSharedPrompt) {
  SoftPromptConfig c = Multitask(2, 2);
  at::Tensor a = at::randn({4, 3}), b = at::randn({4, 3});
  auto prompt = SoftPrompt::FromTeachers(c, {a, b});
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_TRUE(at::allclose(prompt->prompt_embeddings(), (a + b) / 2));
  EXPECT_TRUE(at::allclose(prompt->TaskPrompt(0), (a + b) / 2));
  EXPECT_TRUE(at::allclose(prompt->TaskPrompt(1), (a + b) / 2));
}

TEST(SoftPrompt, SourceStateModesFollowPeft) {
  SoftPromptConfig source_config = Multitask(3);
  auto source = SoftPrompt::Random(source_config, 3);
  ASSERT_TRUE(source.ok());
  auto state = source->StateDict();
  SoftPromptConfig target = Multitask(1);

  auto avg = SoftPrompt::FromSourceState(target, state, PromptInit::kAverageSourceTasks, 0, 1);
  ASSERT_TRUE(avg.ok()) << avg.status();
  EXPECT_TRUE(at::allclose(avg->prompt_embeddings(), state["prompt_embeddings"]));
  EXPECT_TRUE(at::allclose(avg->prefix_task_cols(), state["prefix_task_cols"].mean(0, true)));
  EXPECT_TRUE(at::allclose(avg->prefix_task_rows(), state["prefix_task_rows"].mean(0, true)));

  auto exact = SoftPrompt::FromSourceState(target, state, PromptInit::kExactSourceTask, 2, 1);
  ASSERT_TRUE(exact.ok());
  EXPECT_TRUE(at::allclose(exact->prefix_task_cols()[0], state["prefix_task_cols"][2]));

  auto shared = SoftPrompt::FromSourceState(target, state, PromptInit::kOnlySourceShared, 0, 1);
  ASSERT_TRUE(shared.ok());
  EXPECT_TRUE(at::allclose(shared->prompt_embeddings(), state["prompt_embeddings"]));
  EXPECT_FALSE(at::allclose(shared->prefix_task_cols(), state["prefix_task_cols"].mean(0, true)));

  auto out_of_range = SoftPrompt::FromSourceState(target, state, PromptInit::kExactSourceTask, 3, 1);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out_of_range.status().message().find("prompt_tuning_init_task"), std::string::npos);
}

TEST(SoftPrompt, TextInitTilesTheTokensToTheLength) {
  SoftPromptConfig c;
  c.num_virtual_tokens = 5;
  c.token_dim = 2;
  at::Tensor table = at::arange(20, at::kFloat).view({10, 2});
  auto prompt = SoftPrompt::FromText(c, {7, 3}, table, 0);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  at::Tensor want = table.index_select(0, at::tensor({7, 3, 7, 3, 7}, at::kLong));
  EXPECT_TRUE(at::equal(prompt->prompt_embeddings(), want));
}

// Gemma's embedding layer scales its rows, and PEFT takes TEXT and
// SAMPLE_VOCAB rows through that layer: the prompt starts from scaled rows.
TEST(SoftPrompt, InitRowsTakeTheEmbeddingScale) {
  SoftPromptConfig c;
  c.num_virtual_tokens = 3;
  c.token_dim = 2;
  at::Tensor table = at::arange(20, at::kFloat).view({10, 2});
  at::Tensor scale = at::scalar_tensor(1.5, at::kFloat);
  auto text = SoftPrompt::FromText(c, {7, 3}, table, 0, scale);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_TRUE(at::equal(text->prompt_embeddings(),
                        table.index_select(0, at::tensor({7, 3, 7}, at::kLong)) * 1.5));
  auto plain = SoftPrompt::SampleVocab(c, table, 4);
  auto scaled = SoftPrompt::SampleVocab(c, table, 4, scale);
  ASSERT_TRUE(plain.ok() && scaled.ok());
  EXPECT_TRUE(at::equal(scaled->prompt_embeddings(), plain->prompt_embeddings() * 1.5));
}

TEST(SoftPrompt, RandomIsReproducible) {
  auto a = SoftPrompt::Random(Multitask(2), 9), b = SoftPrompt::Random(Multitask(2), 9);
  auto c = SoftPrompt::Random(Multitask(2), 10);
  EXPECT_TRUE(at::equal(a->prompt_embeddings(), b->prompt_embeddings()));
  EXPECT_TRUE(at::equal(a->prefix_task_rows(), b->prefix_task_rows()));
  EXPECT_FALSE(at::equal(a->prompt_embeddings(), c->prompt_embeddings()));
}

TEST(SoftPrompt, BadShapesAndSizesNameTheField) {
  SoftPromptConfig c = Multitask(2);
  auto wrong = SoftPrompt::FromTensors(c, at::zeros({4, 5}), at::zeros({2, 4, 1}), at::zeros({2, 1, 3}));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("prompt_embeddings"), std::string::npos);

  auto tasks = SoftPrompt::FromTensors(c, at::zeros({4, 3}), at::zeros({3, 4, 1}), at::zeros({2, 1, 3}));
  EXPECT_NE(tasks.status().message().find("prefix_task_cols"), std::string::npos);

  // T = 4 rows: rank 5 is not low rank, but PEFT writes such files and
  // computes them (the factors' product is of full rank); they are read.
  SoftPromptConfig big_rank = Multitask(2, 5);
  EXPECT_TRUE(ValidateSoftPromptConfig(big_rank).ok());
  auto full = SoftPrompt::FromTensors(big_rank, at::ones({4, 3}), at::ones({2, 4, 5}),
                                      at::ones({2, 5, 3}));
  ASSERT_TRUE(full.ok()) << full.status();
  SoftPromptConfig no_rank = Multitask(2, 0);
  EXPECT_NE(ValidateSoftPromptConfig(no_rank).message().find("num_ranks"), std::string::npos);

  EXPECT_FALSE(ParsePromptInit("SOMETHING").ok());
  EXPECT_EQ(*ParsePromptInit("EXACT_SOURCE_TASK"), PromptInit::kExactSourceTask);
}

}  // namespace
}  // namespace mpt
