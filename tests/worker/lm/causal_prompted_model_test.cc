// The causal-LM seam against PEFT (PeftModelForCausalLM, CAUSAL_LM) on the
// tiny llama of tests/testdata/make_causal_lm.py: the input/target join, the
// prompted forward (logits, hidden states, loss), greedy generation, rank
// scores and TEXT init of adapters PEFT wrote, batched and padded here where
// PEFT ran each example alone; and the adapter files we write for CAUSAL_LM.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/data/batching.h"
#include "worker/lm/base_model_loader.h"
#include "worker/lm/causal_prompted_model.h"
#include "worker/lm/causal_task_tokenizer.h"
#include "worker/lm/model_family.h"
#include "worker/model/hf_tokenizer.h"
#include "worker/model/labels.h"
#include "worker/model/torch_tensors.h"
#include "worker/prompts/adapter_io.h"
#include "worker/prompts/soft_prompt.h"

namespace mpt {
namespace {

using testing::DataPath;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str());
}

std::vector<int> Ids(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class CausalPromptedModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto base = LoadBaseModel(DataPath("tests/testdata/causal_lm/model"));
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = new BaseModel(std::move(*base));
    auto golden = LoadSafetensors(DataPath("tests/testdata/causal_lm/golden.safetensors"));
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = new std::map<std::string, at::Tensor>(std::move(*golden));
    notes_ = new nlohmann::json(ReadJson(DataPath("tests/testdata/causal_lm/golden.json")));
  }
  static void TearDownTestSuite() {
    delete base_;
    delete golden_;
    delete notes_;
  }

  const PromptedLanguageModel& model() const { return *base_->model; }
  const TaskTokenizer& tokenizer() const { return *base_->tokenizer; }
  const at::Tensor& golden(const std::string& name) const { return golden_->at(name); }
  int num_examples() const { return static_cast<int>((*notes_)["examples"].size()); }

  // Every golden example in one padded batch, tokenised by our tokenizer.
  Batch AllExamples(std::vector<TokenizedExample>* storage) const {
    storage->clear();
    for (const auto& e : (*notes_)["examples"]) {
      TokenizedExample t;
      t.input_ids = tokenizer().EncodeInput(e["input"].get<std::string>(), 0);
      t.target_ids = tokenizer().EncodeTarget(e["target"].get<std::string>(), 0);
      t.task_id = e["task"].get<int>();
      storage->push_back(std::move(t));
    }
    std::vector<const TokenizedExample*> rows;
    for (const auto& t : *storage) rows.push_back(&t);
    return Collate(rows, tokenizer().pad_id());
  }

  SoftPrompt ReadPrompt(const std::string& name) const {
    auto adapter = ReadAdapter(DataPath("tests/testdata/causal_lm/" + name));
    EXPECT_TRUE(adapter.ok()) << adapter.status();
    EXPECT_EQ(adapter->info.task_type, "CAUSAL_LM");
    EXPECT_EQ(adapter->info.prompt.num_transformer_submodules, 1);
    return adapter->prompt;
  }

  static BaseModel* base_;
  static std::map<std::string, at::Tensor>* golden_;
  static nlohmann::json* notes_;
};

BaseModel* CausalPromptedModelTest::base_ = nullptr;
std::map<std::string, at::Tensor>* CausalPromptedModelTest::golden_ = nullptr;
nlohmann::json* CausalPromptedModelTest::notes_ = nullptr;

TEST_F(CausalPromptedModelTest, LoadsAsADecoderOnlyModel) {
  EXPECT_EQ(base_->kind.family, ModelFamily::kDecoderOnly);
  EXPECT_EQ(model().model_type(), "llama");
  EXPECT_STREQ(model().peft_task_type(), "CAUSAL_LM");
  EXPECT_EQ(model().hidden_size(), 32);
  EXPECT_EQ(model().num_layers(), 2);
  EXPECT_EQ(model().num_attention_heads(), 4);
}

TEST_F(CausalPromptedModelTest, JoinsInputAndTargetAsPeftsRecipe) {
  std::vector<TokenizedExample> examples;
  AllExamples(&examples);
  for (int i = 0; i < num_examples(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(examples[i].input_ids, Ids(golden("input_ids_" + std::to_string(i))));
    EXPECT_EQ(examples[i].target_ids, Ids(golden("target_ids_" + std::to_string(i))));
  }
  // Cuts: the input loses its end, the target keeps EOS last.
  std::vector<int> input = tokenizer().EncodeInput("Copy this: hello world", 2);
  EXPECT_EQ(input, std::vector<int>(examples[2].input_ids.begin(),
                                    examples[2].input_ids.begin() + 2));
  std::vector<int> target = tokenizer().EncodeTarget("the longest answer of the four", 3);
  ASSERT_EQ(target.size(), 3u);
  EXPECT_EQ(target.back(), tokenizer().eos_id());
}

// The multitask adapter PEFT wrote, all examples in one padded batch: each
// row gives what PEFT gave for it alone.
TEST_F(CausalPromptedModelTest, MultitaskForwardEqualsPeftOnAPaddedBatch) {
  SoftPrompt prompt = ReadPrompt("peft_mpt");
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  at::NoGradGuard no_grad;
  const PromptLayout layout = PromptLayout::Peft(true, 4, 1);
  PromptedOutput out = model().Forward(prompt.Forward(batch.task_ids, batch.size()), layout,
                                       batch.input_ids, batch.attention_mask, batch.labels);
  ASSERT_EQ(out.logits.size(1), batch.labels.size(1));
  EXPECT_TRUE(at::equal(out.labels, batch.labels));
  const at::Tensor log_probs = at::log_softmax(out.logits.to(at::kFloat), -1);
  for (int i = 0; i < num_examples(); ++i) {
    SCOPED_TRACE(i);
    const at::Tensor want = golden("mpt_logits_" + std::to_string(i));
    const int64_t length = want.size(0);
    EXPECT_LT(MaxDiff(out.logits[i].narrow(0, 0, length), want), 1e-4);
    EXPECT_LT(MaxDiff(out.hidden[i].narrow(0, 0, length), golden("mpt_hidden_" + std::to_string(i))),
              1e-4);
    // PEFT's loss: the mean target-token cross-entropy.
    const at::Tensor targets = batch.labels[i].narrow(0, 0, length);
    const double loss =
        -log_probs[i].narrow(0, 0, length).gather(-1, targets.unsqueeze(-1)).mean().item<double>();
    EXPECT_NEAR(loss, golden("mpt_loss")[i].item<double>(), 1e-4);
  }
}

TEST_F(CausalPromptedModelTest, PromptTuningForwardEqualsPeft) {
  SoftPrompt prompt = ReadPrompt("peft_pt");
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  at::NoGradGuard no_grad;
  PromptedOutput out =
      model().Forward(prompt.Forward(at::zeros({batch.size()}, at::kLong), batch.size()),
                      PromptLayout::Peft(false, 4, 1), batch.input_ids, batch.attention_mask,
                      batch.labels);
  for (int i = 0; i < num_examples(); ++i) {
    SCOPED_TRACE(i);
    const at::Tensor want = golden("pt_logits_" + std::to_string(i));
    EXPECT_LT(MaxDiff(out.logits[i].narrow(0, 0, want.size(0)), want), 1e-4);
  }
}

TEST_F(CausalPromptedModelTest, GreedyGenerationGivesPeftsTokens) {
  SoftPrompt prompt = ReadPrompt("peft_mpt");
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  const int steps = (*notes_)["gen_steps"].get<int>();
  at::Tensor ids = model().Generate(prompt.Forward(batch.task_ids, batch.size()), 4,
                                    batch.input_ids, batch.attention_mask, steps)
                       .cpu();
  ASSERT_EQ(ids.size(0), batch.size());
  for (int i = 0; i < num_examples(); ++i) {
    SCOPED_TRACE(i);
    const std::vector<int> want = Ids(golden("mpt_generated_" + std::to_string(i)));
    std::vector<int> got = Ids(ids[i]);
    got.resize(want.size());
    EXPECT_EQ(got, want);
  }
}

// generation_config.json's eos_token_id ends an answer too, as in
// transformers' generate(): with the second token of example 0's answer
// listed there, that answer stops after it and the others run on.
TEST_F(CausalPromptedModelTest, GenerationStopsAtGenerationConfigEos) {
  const std::string dir = testing::FreshTempDir("generation_config_eos");
  const std::string src = testing::DataPath("tests/testdata/causal_lm/model");
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"}) {
    testing::WriteFile(dir + "/" + name, testing::ReadFile(src + "/" + name));
  }
  const std::vector<int> want0 = Ids(golden("mpt_generated_0"));
  ASSERT_GE(want0.size(), 3u);
  testing::WriteFile(dir + "/generation_config.json",
                     "{\"eos_token_id\": [" + std::to_string(want0[1]) + ", 999999]}");
  auto base = LoadBaseModel(dir);
  ASSERT_TRUE(base.ok()) << base.status();
  SoftPrompt prompt = ReadPrompt("peft_mpt");
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  const int steps = (*notes_)["gen_steps"].get<int>();
  at::Tensor ids = base->model->Generate(prompt.Forward(batch.task_ids, batch.size()), 4,
                                         batch.input_ids, batch.attention_mask, steps)
                       .cpu();
  const int eos = tokenizer().eos_id();
  std::vector<int> got0 = Ids(ids[0]);
  std::vector<int> expect0 = {want0[0], want0[1]};
  expect0.resize(got0.size(), eos);
  EXPECT_EQ(got0, expect0);
  for (int i = 1; i < num_examples(); ++i) {
    SCOPED_TRACE(i);
    std::vector<int> want = Ids(golden("mpt_generated_" + std::to_string(i)));
    auto stop = std::find(want.begin(), want.end(), want0[1]);
    if (stop != want.end()) want.erase(stop + 1, want.end());
    std::vector<int> got = Ids(ids[i]);
    got.resize(want.size());
    EXPECT_EQ(got, want);
  }

  // An unreadable file is left out, as transformers does, and the model loads.
  testing::WriteFile(dir + "/generation_config.json", "{\"eos_token_id\": \"x\"}");
  EXPECT_TRUE(LoadBaseModel(dir).ok());
}

TEST(GenerationEosIdsTest, ReadsWhatTransformersReads) {
  const std::string dir = testing::FreshTempDir("generation_eos_ids");
  auto read = [&](const std::string& text) {
    testing::WriteFile(dir + "/generation_config.json", text);
    return ReadGenerationEosIds(dir);
  };
  EXPECT_EQ(*ReadGenerationEosIds(testing::FreshTempDir("generation_eos_none")),
            std::vector<int>());
  EXPECT_EQ(*read(R"({"eos_token_id": 7})"), std::vector<int>{7});
  EXPECT_EQ(*read(R"({"eos_token_id": [7, 9]})"), (std::vector<int>{7, 9}));
  EXPECT_EQ(*read(R"({"eos_token_id": null, "bos_token_id": 1})"), std::vector<int>());
  EXPECT_EQ(*read(R"({"do_sample": true})"), std::vector<int>());
  for (const char* bad : {R"({"eos_token_id": -1})", R"({"eos_token_id": [1, "2"]})",
                          R"({"eos_token_id": 1.5})", "[1]", "{"}) {
    absl::StatusOr<std::vector<int>> ids = read(bad);
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(ids.status())) << ids.status();
    EXPECT_NE(ids.status().message().find("generation_config.json"), std::string::npos)
        << ids.status();
  }
}

TEST_F(CausalPromptedModelTest, RankScoresArePeftsLogProbabilities) {
  SoftPrompt prompt = ReadPrompt("peft_mpt");
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  std::vector<std::vector<int>> candidates;
  for (const auto& c : (*notes_)["candidates"]) {
    candidates.push_back(tokenizer().EncodeTarget(c.get<std::string>(), 0));
  }
  std::vector<const std::vector<int>*> rows;
  for (const auto& c : candidates) rows.push_back(&c);
  const at::Tensor padded = PadRows(rows, kIgnoreIndex).unsqueeze(0).expand(
      {batch.size(), -1, -1});
  const at::Tensor scores =
      model().RankScores(prompt.Forward(batch.task_ids, batch.size()),
                         PromptLayout::Peft(true, 4, 1), batch.input_ids, batch.attention_mask,
                         padded);
  EXPECT_LT(MaxDiff(scores, golden("mpt_rank_scores")), 1e-3);
}

// RankScores decodes [prompt; input] once per example and continues the K
// candidates from its KV cache; the scores must be those of each whole
// sequence [prompt; input; candidate] through Forward. Inputs of different
// lengths (left-aligned), candidates of 1 to 3 tokens (-100 padded), and
// model variants that change what the cache must keep: a sliding window
// shorter than the sequence, a dynamic rope within its range (cached) and
// past it (computed whole).
TEST_F(CausalPromptedModelTest, RankScoresWithASharedPrefixEqualWholeSequences) {
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  const int64_t b = batch.size(), k = 3, nv = 4;
  const PromptLayout layout = PromptLayout::Peft(false, nv, 1);
  at::manual_seed(7);
  const at::Tensor prompts = at::randn({b, nv, 32});
  at::Tensor candidates = at::randint(3, 2000, {b, k, 3}, at::TensorOptions().dtype(at::kLong));
  candidates.select(1, 0).narrow(1, 1, 2).fill_(kIgnoreIndex);  // 1 token
  candidates.select(1, 2).narrow(1, 2, 1).fill_(kIgnoreIndex);  // 2 tokens

  const std::string source = DataPath("tests/testdata/causal_lm/model");
  const nlohmann::json base_config = ReadJson(source + "/config.json");
  struct Variant {
    const char* name;
    nlohmann::json changes;
  };
  const std::vector<Variant> variants = {
      {"llama", nlohmann::json::object()},
      {"mistral, sliding window 5",
       {{"model_type", "mistral"},
        {"architectures", {"MistralForCausalLM"}},
        {"sliding_window", 5}}},
      {"dynamic rope within range",
       {{"rope_parameters", {{"rope_type", "dynamic"}, {"factor", 2.0}, {"rope_theta", 10000.0}}}}},
      {"dynamic rope past max_position_embeddings",
       {{"rope_parameters", {{"rope_type", "dynamic"}, {"factor", 2.0}, {"rope_theta", 10000.0}}},
        {"max_position_embeddings", 8}}},
  };
  at::NoGradGuard no_grad;
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    const std::string dir = testing::FreshTempDir("rank_shared_prefix");
    for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
      std::filesystem::create_symlink(source + "/" + f, dir + "/" + f);
    }
    nlohmann::json config = base_config;
    config.update(v.changes);
    testing::WriteFile(dir + "/config.json", config.dump());
    auto loaded = LoadPromptedModel(dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const PromptedLanguageModel& m = **loaded;

    const at::Tensor scores =
        m.RankScores(prompts, layout, batch.input_ids, batch.attention_mask, candidates);
    const at::Tensor labels = candidates.reshape({b * k, 3});
    PromptedOutput whole =
        m.Forward(prompts.repeat_interleave(k, 0), layout, batch.input_ids.repeat_interleave(k, 0),
                  batch.attention_mask.repeat_interleave(k, 0), labels);
    const at::Tensor log_probs = at::log_softmax(whole.logits.to(at::kFloat), -1);
    const at::Tensor expected = log_probs.gather(-1, labels.clamp_min(0).unsqueeze(-1))
                                    .squeeze(-1)
                                    .masked_fill(labels.eq(kIgnoreIndex), 0.0)
                                    .sum(-1)
                                    .view({b, k});
    ASSERT_EQ(scores.sizes(), expected.sizes());
    EXPECT_LT(MaxDiff(scores, expected), 1e-4) << "scores\n"
                                               << scores << "\nexpected\n"
                                               << expected;
  }
}

TEST_F(CausalPromptedModelTest, TextInitIsPefts) {
  SoftPromptConfig c;
  c.kind = PromptKind::kPromptTuning;
  c.num_virtual_tokens = 4;
  c.token_dim = 32;
  auto prompt = SoftPrompt::FromText(c, tokenizer().Encode((*notes_)["init_text"].get<std::string>()),
                                     model().word_embeddings(), 0);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(MaxDiff(prompt->prompt_embeddings(), golden("text_init")), 0.0);
}

TEST_F(CausalPromptedModelTest, AdaptersWeWriteMatchPeftsFiles) {
  for (const char* name : {"peft_mpt", "peft_pt"}) {
    SCOPED_TRACE(name);
    const std::string peft_dir = DataPath(std::string("tests/testdata/causal_lm/") + name);
    auto adapter = ReadAdapter(peft_dir);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    EXPECT_TRUE(CheckAdapterFitsModel(adapter->info, 32, "CAUSAL_LM").ok());
    EXPECT_FALSE(CheckAdapterFitsModel(adapter->info, 32, "SEQ_2_SEQ_LM").ok());
    const std::string ours = testing::FreshTempDir(name) + "/adapter";
    ASSERT_TRUE(WriteAdapter(ours, adapter->prompt, adapter->info).ok());
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
  }
}

TEST_F(CausalPromptedModelTest, RefusesTwoSubmodules) {
  const absl::Status status = model().CheckLayout(PromptLayout::Peft(true, 4, 2));
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_NE(status.message().find("num_transformer_submodules"), std::string::npos);
  std::vector<TokenizedExample> examples;
  Batch batch = AllExamples(&examples);
  EXPECT_THROW(model().Forward(at::zeros({batch.size(), 8, 32}), PromptLayout::Peft(true, 4, 2),
                               batch.input_ids, batch.attention_mask, batch.labels),
               c10::Error);
}

TEST(BaseModelLoaderTest, NamesAnUnknownModelType) {
  const std::string dir = testing::FreshTempDir("unknown_type");
  testing::WriteFile(dir + "/config.json", R"({"model_type": "gpt_neox"})");
  auto base = LoadBaseModel(dir);
  ASSERT_FALSE(base.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(base.status()));
  EXPECT_NE(base.status().message().find("config.json: model_type \"gpt_neox\""),
            std::string::npos)
      << base.status();
}

// A tokenizer whose ids pass the model's embedding rows is refused at load
// time, naming both files, rather than failing at the first forward pass.
TEST(CausalTaskTokenizerTest, RefusesATokenizerLargerThanTheModel) {
  auto hf = HfTokenizer::Load(testing::DataPath("tests/testdata/causal_lm/model"));
  ASSERT_TRUE(hf.ok()) << hf.status();
  std::shared_ptr<const HfTokenizer> shared(std::move(*hf));
  ASSERT_EQ(shared->vocab_size(), 2075);
  EXPECT_TRUE(CausalTaskTokenizer::Create(shared, 2075).ok());
  auto small = CausalTaskTokenizer::Create(shared, 2000);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(small.status().message().find("tokenizer.json holds ids up to 2074"),
            std::string::npos)
      << small.status();
  EXPECT_NE(small.status().message().find("2000 embedding rows (config.json vocab_size)"),
            std::string::npos)
      << small.status();
}

}  // namespace
}  // namespace mpt
