// Our multitask prompts, init modes and adapter files against PEFT's, on the
// golden t5_relu checkpoint (tests/testdata/mpt, made by tools/make_golden.py).
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/prompts/adapter_io.h"
#include "worker/prompts/prompt_inputs.h"
#include "worker/prompts/soft_prompt.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

using testing::DataPath;

constexpr double kTol = 1e-4;

std::map<std::string, at::Tensor> Load(const std::string& relative) {
  auto t = LoadSafetensors(DataPath(relative));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::map<std::string, at::Tensor>{};
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

SoftPromptConfig GoldenConfig(int num_tasks) {
  SoftPromptConfig c;
  c.kind = PromptKind::kMultitask;
  c.num_virtual_tokens = 4;
  c.num_transformer_submodules = 2;
  c.token_dim = 64;
  c.num_tasks = num_tasks;
  return c;
}

class PeftGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = T5Model::Load(DataPath("tests/testdata/t5_relu"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    batch_ = new std::map<std::string, at::Tensor>(Load("tests/testdata/golden_t5_relu.safetensors"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete batch_;
  }

  // The model's logits and loss on the golden batch with `prompts` [B, T, d].
  static T5Output Run(const at::Tensor& prompts, bool multitask) {
    at::NoGradGuard no_grad;
    T5ForwardInputs in = BuildPromptedInputs(
        *model_, prompts, PromptLayout::Peft(multitask, 4, 2), batch_->at("input_ids"),
        batch_->at("attention_mask"), batch_->at("labels"));
    return model_->Forward(in);
  }

  static T5Model* model_;
  static std::map<std::string, at::Tensor>* batch_;
};

T5Model* PeftGoldenTest::model_ = nullptr;
std::map<std::string, at::Tensor>* PeftGoldenTest::batch_ = nullptr;

TEST_F(PeftGoldenTest, MultitaskForwardEqualsPeft) {
  auto golden = Load("tests/testdata/mpt/forward.safetensors");
  auto state = Load("tests/testdata/mpt/source_state.safetensors");
  auto prompt = SoftPrompt::FromTensors(GoldenConfig(3), state["prompt_embeddings"],
                                        state["prefix_task_cols"], state["prefix_task_rows"]);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  at::Tensor task_ids = golden["task_ids"].to(at::kLong);
  at::Tensor prompts = prompt->Forward(task_ids, 3);
  EXPECT_LT(MaxDiff(prompts, golden["prompt"]), 1e-6);

  T5Output out = Run(prompts, /*multitask=*/true);
  EXPECT_LT(MaxDiff(out.logits, golden["logits"]), kTol);
  EXPECT_LT(MaxDiff(out.decoder_hidden, golden["decoder_hidden"]), kTol);
  EXPECT_LT(MaxDiff(out.encoder_hidden, golden["encoder_hidden"]), kTol);
  EXPECT_NEAR(out.loss.item<double>(), golden["loss"].item<double>(), kTol);
}

TEST_F(PeftGoldenTest, RankTwoForwardEqualsPeft) {
  auto golden = Load("tests/testdata/mpt/forward.safetensors");
  auto state = Load("tests/testdata/mpt/source_state_r2.safetensors");
  SoftPromptConfig c = GoldenConfig(3);
  c.num_ranks = 2;
  auto prompt = SoftPrompt::FromTensors(c, state["prompt_embeddings"], state["prefix_task_cols"],
                                        state["prefix_task_rows"]);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  at::Tensor prompts = prompt->Forward(golden["task_ids"].to(at::kLong), 3);
  EXPECT_LT(MaxDiff(prompts, golden["prompt_r2"]), 1e-6);
  EXPECT_NEAR(Run(prompts, true).loss.item<double>(), golden["loss_r2"].item<double>(), kTol);
}

TEST_F(PeftGoldenTest, SourceInitModesGivePeftsTensors) {
  auto state = Load("tests/testdata/mpt/source_state.safetensors");
  struct Case {
    const char* mode;
    PromptInit init;
    bool factors_deterministic;
  };
  for (const Case& c : {Case{"AVERAGE_SOURCE_TASKS", PromptInit::kAverageSourceTasks, true},
                        Case{"EXACT_SOURCE_TASK", PromptInit::kExactSourceTask, true},
                        Case{"ONLY_SOURCE_SHARED", PromptInit::kOnlySourceShared, false}}) {
    SCOPED_TRACE(c.mode);
    auto golden = Load(std::string("tests/testdata/mpt/init_") + c.mode + ".safetensors");
    auto ours = SoftPrompt::FromSourceState(GoldenConfig(1), state, c.init, /*init_task=*/1, 0);
    ASSERT_TRUE(ours.ok()) << ours.status();
    EXPECT_EQ(MaxDiff(ours->prompt_embeddings(), golden["prompt_embeddings"]), 0.0);
    if (c.factors_deterministic) {
      EXPECT_LT(MaxDiff(ours->prefix_task_cols(), golden["prefix_task_cols"]), 1e-7);
      EXPECT_LT(MaxDiff(ours->prefix_task_rows(), golden["prefix_task_rows"]), 1e-7);
    } else {
      // PEFT draws these from N(0, 0.02); so do we.
      EXPECT_EQ(ours->prefix_task_cols().sizes(), golden["prefix_task_cols"].sizes());
      EXPECT_LT(ours->prefix_task_rows().std().item<double>(), 0.04);
    }
  }
}

TEST_F(PeftGoldenTest, TextInitGivesPeftsTensors) {
  auto golden = Load("tests/testdata/mpt/init_TEXT.safetensors");
  auto tokenizer = T5Tokenizer::Load(DataPath("tests/testdata/t5_relu"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto ours = SoftPrompt::FromText(GoldenConfig(1),
                                   (*tokenizer)->Encode("Classify the sentiment of this review"),
                                   model_->word_embeddings(), 0);
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_EQ(MaxDiff(ours->prompt_embeddings(), golden["prompt_embeddings"]), 0.0);
}

TEST_F(PeftGoldenTest, AdaptersWrittenByPeftLoadAndGivePeftsLogits) {
  auto outputs = Load("tests/testdata/mpt/adapter_outputs.safetensors");
  auto forward = Load("tests/testdata/mpt/forward.safetensors");

  auto mt = ReadAdapter(DataPath("tests/testdata/mpt/adapter_peft"));
  ASSERT_TRUE(mt.ok()) << mt.status();
  EXPECT_EQ(mt->info.prompt.kind, PromptKind::kMultitask);
  EXPECT_EQ(mt->info.prompt.num_tasks, 3);
  T5Output out = Run(mt->prompt.Forward(outputs["task_ids"].to(at::kLong), 3), true);
  EXPECT_LT(MaxDiff(out.logits, forward["logits"]), kTol);
  EXPECT_NEAR(out.loss.item<double>(), outputs["mt_loss"].item<double>(), kTol);

  auto pt = ReadAdapter(DataPath("tests/testdata/mpt/adapter_peft_prompt"));
  ASSERT_TRUE(pt.ok()) << pt.status();
  EXPECT_EQ(pt->info.prompt.kind, PromptKind::kPromptTuning);
  T5Output plain = Run(pt->prompt.Forward(at::Tensor(), 3), false);
  EXPECT_LT(MaxDiff(plain.logits, outputs["pt_logits"]), kTol);
  EXPECT_NEAR(plain.loss.item<double>(), outputs["pt_loss"].item<double>(), kTol);
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str());
}

TEST_F(PeftGoldenTest, AdaptersWeWriteMatchPeftsFiles) {
  for (const char* name : {"adapter_peft", "adapter_peft_prompt"}) {
    SCOPED_TRACE(name);
    const std::string peft_dir = DataPath(std::string("tests/testdata/mpt/") + name);
    auto adapter = ReadAdapter(peft_dir);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    const std::string ours = testing::FreshTempDir(name) + "/adapter";
    ASSERT_TRUE(WriteAdapter(ours, adapter->prompt, adapter->info).ok());

    // Every key PEFT writes is there with PEFT's value (the version and the
    // base model path aside, which name the writer and the machine).
    nlohmann::json theirs = ReadJson(peft_dir + "/adapter_config.json");
    nlohmann::json mine = ReadJson(ours + "/adapter_config.json");
    for (auto& [key, value] : theirs.items()) {
      if (key == "peft_version" || key == "base_model_name_or_path") continue;
      ASSERT_TRUE(mine.contains(key)) << key;
      EXPECT_EQ(mine[key], value) << key;
    }
    auto a = LoadSafetensors(peft_dir + "/adapter_model.safetensors");
    auto b = LoadSafetensors(ours + "/adapter_model.safetensors");
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), b->size());
    for (auto& [key, t] : *a) EXPECT_TRUE(at::equal(t, b->at(key))) << key;

    // And it reads back as the same adapter.
    auto again = ReadAdapter(ours);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE(at::equal(again->prompt.prompt_embeddings(), adapter->prompt.prompt_embeddings()));
  }
}

}  // namespace
}  // namespace mpt
