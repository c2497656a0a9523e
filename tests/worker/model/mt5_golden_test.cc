// mT5 beyond what the shared golden suite (t5_golden_test, instantiated for
// mt5 and mt5_tied) covers, against tools/make_golden_mt5.py's files:
//  - a PEFT MULTITASK_PROMPT_TUNING adapter saved on the mt5 base loads and
//    gives PEFT's logits and loss;
//  - a checkpoint with mT5's real vocabulary size (250112, tiny layers,
//    weights rebuilt here from the script's integer-hash formula) loads and
//    gives transformers' loss, log-normalisers, logit columns, argmax and
//    greedy tokens;
//  - the config rules transformers applies to mT5 (no output scaling, the
//    gated default) and to UMT5 (a bias per layer, T5's scaling rule).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/eval/generation.h"
#include "worker/model/t5_config.h"
#include "worker/model/t5_model.h"
#include "worker/model/torch_tensors.h"
#include "worker/prompts/adapter_io.h"
#include "worker/prompts/prompt_inputs.h"

namespace mpt {
namespace {

using ::mpt::testing::DataPath;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr double kTolerance = 1e-4;

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>();
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(::mpt::testing::ReadFile(path));
}

at::Tensor LongTensor(const nlohmann::json& rows) {
  std::vector<int64_t> flat;
  for (const auto& row : rows) {
    for (const auto& v : row) flat.push_back(v.get<int64_t>());
  }
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(rows.size()), -1});
}

TEST(Mt5Test, AdapterSavedByPeftOnMt5GivesPeftsOutputs) {
  auto model = T5Model::Load(DataPath("tests/testdata/mt5"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().model_type, "mt5");
  auto golden = LoadSafetensors(DataPath("tests/testdata/golden_mt5.safetensors"));
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto& g = *golden;

  auto adapter = ReadAdapter(DataPath("tests/testdata/mt5/adapter_peft"));
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->info.prompt.kind, PromptKind::kMultitask);
  EXPECT_EQ(adapter->info.base_model_name_or_path, "mt5");
  ASSERT_TRUE(CheckAdapterFitsModel(adapter->info, (*model)->config().d_model).ok());
  const int nv = adapter->info.prompt.num_virtual_tokens;
  const int64_t batch = g["input_ids"].size(0);

  at::NoGradGuard no_grad;
  at::Tensor prompts = adapter->prompt.Forward(at::zeros({batch}, at::kLong), 1);
  T5ForwardInputs in = BuildPromptedInputs(**model, prompts, PromptLayout::Peft(true, nv, 2),
                                           g["input_ids"], g["attention_mask"], g["labels"]);
  T5Output out = (*model)->Forward(in);
  const double diff = MaxAbsDiff(out.logits, g["mt2_logits"]);
  std::cout << "max_abs_diff mt5 adapter_peft logits " << diff << std::endl;
  EXPECT_LE(diff, kTolerance);
  EXPECT_NEAR(out.loss.item<double>(), g["mt2_loss"].item<double>(), kTolerance);
}

// The weights of golden_mt5_large_vocab.json: tools/make_golden_mt5.py's
// formula_tensor.
at::Tensor FormulaTensor(const std::vector<int64_t>& shape, int64_t k, double offset,
                         double scale) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t h = static_cast<uint32_t>(static_cast<uint64_t>(i) * 2654435761u +
                                       static_cast<uint64_t>(k + 1) * 40503u);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    h *= 3266489917u;
    h ^= h >> 16;
    const double u = static_cast<double>(h) / 2147483648.0 - 1.0;
    values[static_cast<size_t>(i)] = static_cast<float>(offset + scale * u);
  }
  return at::tensor(values, at::kFloat).view(shape);
}

TEST(Mt5Test, RealVocabularySizeLoadsAndMatchesTransformers) {
  const nlohmann::json doc = ReadJson(DataPath("tests/testdata/golden_mt5_large_vocab.json"));
  const std::string folder = ::mpt::testing::FreshTempDir("mt5_large_vocab");
  nlohmann::json config = doc["config"];
  config["model_type"] = doc["model_type"];
  ::mpt::testing::WriteFile(folder + "/config.json", config.dump(1));
  std::map<std::string, at::Tensor> tensors;
  int64_t k = 0;
  for (const auto& t : doc["tensors"]) {
    tensors[t["name"].get<std::string>()] =
        FormulaTensor(t["shape"].get<std::vector<int64_t>>(), k++, t["offset"].get<double>(),
                      t["scale"].get<double>());
  }
  ASSERT_TRUE(SaveSafetensors(folder + "/model.safetensors", tensors).ok());
  tensors.clear();

  auto model = T5Model::Load(folder);
  ASSERT_TRUE(model.ok()) << model.status();
  const T5Config& c = (*model)->config();
  EXPECT_EQ(c.vocab_size, 250112);
  EXPECT_FALSE(c.scale_decoder_outputs);

  at::NoGradGuard no_grad;
  const at::Tensor input_ids = LongTensor(doc["input_ids"]);
  const at::Tensor attention_mask = LongTensor(doc["attention_mask"]);
  const at::Tensor labels = LongTensor(doc["labels"]);
  T5ForwardInputs in;
  in.inputs_embeds = (*model)->Embed(input_ids);
  in.attention_mask = attention_mask;
  in.decoder_inputs_embeds = (*model)->Embed((*model)->ShiftRight(labels));
  in.labels = labels;
  T5Output out = (*model)->Forward(in);
  ASSERT_EQ(out.logits.size(2), 250112);

  const double loss_diff = std::abs(out.loss.item<double>() - doc["loss"].get<double>());
  std::cout << "mt5 large vocab loss " << out.loss.item<double>() << " reference "
            << doc["loss"].get<double>() << std::endl;
  EXPECT_LE(loss_diff, kTolerance);

  const int64_t batch = out.logits.size(0), length = out.logits.size(1);
  std::vector<double> lse_ref;
  std::vector<int64_t> argmax_ref;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t s = 0; s < length; ++s) {
      lse_ref.push_back(doc["logsumexp"][b][s].get<double>());
      argmax_ref.push_back(doc["argmax"][b][s].get<int64_t>());
    }
  }
  at::Tensor lse = at::logsumexp(out.logits, -1);
  EXPECT_LE(MaxAbsDiff(lse, at::tensor(lse_ref, at::kDouble).view({batch, length})), kTolerance);
  EXPECT_TRUE(at::equal(out.logits.argmax(-1),
                        at::tensor(argmax_ref, at::kLong).view({batch, length})));

  const std::vector<int64_t> columns = doc["columns"].get<std::vector<int64_t>>();
  std::vector<double> column_ref;
  for (const auto& b : doc["column_logits"]) {
    for (const auto& s : b) {
      for (const auto& v : s) column_ref.push_back(v.get<double>());
    }
  }
  at::Tensor picked = out.logits.index_select(2, at::tensor(columns, at::kLong));
  const double column_diff = MaxAbsDiff(
      picked, at::tensor(column_ref, at::kDouble).view({batch, length, -1}));
  std::cout << "max_abs_diff mt5 large vocab column logits " << column_diff << std::endl;
  EXPECT_LE(column_diff, kTolerance);

  at::Tensor generated = GreedyGenerate(**model, (*model)->Embed(input_ids), attention_mask,
                                        doc["gen_output"][0].size() - 1);
  EXPECT_TRUE(at::equal(generated, LongTensor(doc["gen_output"])))
      << "ours:\n" << generated << "\nreference:\n" << LongTensor(doc["gen_output"]);
}

std::string Mt5Json(const std::string& extra) {
  return R"({"model_type": "mt5", "vocab_size": 250112, "d_model": 512, "d_kv": 64,
             "d_ff": 1024, "num_layers": 8, "num_heads": 6)" +
         (extra.empty() ? std::string() : ", " + extra) + "}";
}

TEST(Mt5Test, ConfigFollowsMt5Rules) {
  // google/mt5-small's config.json fields.
  auto published = T5Config::FromJson(Mt5Json(
      R"("num_decoder_layers": 8, "feed_forward_proj": "gated-gelu",
         "tie_word_embeddings": false, "relative_attention_num_buckets": 32,
         "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
         "tokenizer_class": "T5Tokenizer")"));
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->model_type, "mt5");
  EXPECT_TRUE(published->is_gated_act);
  EXPECT_EQ(published->dense_act, T5Activation::kGeluNew);
  EXPECT_FALSE(published->tie_word_embeddings);
  EXPECT_FALSE(published->scale_decoder_outputs);
  EXPECT_EQ(published->relative_attention_max_distance, 128);

  // Absent fields take MT5Config's defaults: gated GELU, and no scaling even
  // with the head tied (MT5ForConditionalGeneration never scales).
  auto bare = T5Config::FromJson(Mt5Json(""));
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->feed_forward_proj, "gated-gelu");
  EXPECT_TRUE(bare->is_gated_act);
  EXPECT_TRUE(bare->tie_word_embeddings);
  EXPECT_FALSE(bare->scale_decoder_outputs);
  auto tied = T5Config::FromJson(Mt5Json(R"("tie_word_embeddings": true)"));
  ASSERT_TRUE(tied.ok()) << tied.status();
  EXPECT_FALSE(tied->scale_decoder_outputs);
  auto relu = T5Config::FromJson(Mt5Json(R"("feed_forward_proj": "relu")"));
  ASSERT_TRUE(relu.ok()) << relu.status();
  EXPECT_FALSE(relu->is_gated_act);

  auto scaled = T5Config::FromJson(Mt5Json(R"("scale_decoder_outputs": true)"), "m/config.json");
  ASSERT_FALSE(scaled.ok());
  EXPECT_THAT(scaled.status().message(),
              AllOf(HasSubstr("m/config.json"), HasSubstr("scale_decoder_outputs")));
  EXPECT_TRUE(T5Config::FromJson(Mt5Json(R"("scale_decoder_outputs": false)")).ok());

  // A T5 config keeps T5's defaults.
  auto t5 = T5Config::FromJson(R"({"model_type": "t5", "vocab_size": 100, "d_model": 16,
                                   "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 4})");
  ASSERT_TRUE(t5.ok()) << t5.status();
  EXPECT_FALSE(t5->is_gated_act);
  EXPECT_TRUE(t5->scale_decoder_outputs);
}

TEST(Mt5Test, Umt5ConfigAndUnknownTypes) {
  std::string umt5 = Mt5Json(R"("tie_word_embeddings": false)");
  umt5.replace(umt5.find("\"mt5\""), 5, "\"umt5\"");
  auto config = T5Config::FromJson(umt5);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->per_layer_position_bias);
  EXPECT_TRUE(config->is_gated_act);
  EXPECT_FALSE(config->scale_decoder_outputs);
  // UMT5Config scales by T5's rule: absent tie_word_embeddings means true.
  std::string tied = Mt5Json("");
  tied.replace(tied.find("\"mt5\""), 5, "\"umt5\"");
  config = T5Config::FromJson(tied);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->scale_decoder_outputs);
  EXPECT_FALSE(T5Config::FromJson(Mt5Json(""))->per_layer_position_bias);

  std::string other = Mt5Json("");
  other.replace(other.find("\"mt5\""), 5, "\"bart\"");
  auto status = T5Config::FromJson(other).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("model_type"), HasSubstr("bart"),
                                      HasSubstr("\"t5\""), HasSubstr("\"mt5\""),
                                      HasSubstr("\"umt5\"")));
}

TEST(Mt5Test, Umt5CheckpointHasABiasPerLayer) {
  auto model = T5Model::Load(DataPath("tests/testdata/umt5"));
  ASSERT_TRUE(model.ok()) << model.status();
  const T5Config& c = (*model)->config();
  EXPECT_EQ(c.model_type, "umt5");
  // Embedding, LM head, 2 final norms and the per-block weights, plus one
  // bias table per layer of each stack.
  int tables = 0;
  for (const at::Tensor& t : (*model)->Parameters()) {
    if (t.dim() == 2 && t.size(0) == c.relative_attention_num_buckets &&
        t.size(1) == c.num_heads) {
      ++tables;
    }
  }
  EXPECT_EQ(tables, c.num_layers + c.num_decoder_layers);
}

}  // namespace
}  // namespace mpt
