// Proves that LlamaModel computes what transformers' LlamaForCausalLM,
// Qwen2ForCausalLM and MistralForCausalLM compute (eager attention, fp32) on
// five small random checkpoints made by tests/testdata/make_llama_goldens.py:
// grouped-query attention, the llama3, linear, dynamic and yarn rope types,
// biases, tied and untied heads, sliding windows, bf16/f16 stored weights,
// sharded files, left and right padding, explicit position ids, the shifted
// loss with -100 labels and greedy generation from embeddings with a KV
// cache. Then the KV cache against whole-sequence runs, gradients reaching
// only the prompt, input checks, and bad checkpoints giving errors that name
// the file and the field.
//
// The max abs differences seen are printed as "max_abs_diff ..." lines.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/model/llama_model.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

// fp32 agreement required with the reference (absolute).
constexpr double kTolerance = 1e-4;

std::string Checkpoint(const std::string& name) {
  return ::mpt::testing::DataPath("tests/testdata/llama/" + name);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>();
}

// Greedy decoding with the KV cache, as transformers' generate: the prompt
// (left padding allowed) in one step with generate's position ids, then one
// token per step at the next position.
at::Tensor GreedyWithCache(const LlamaModel& model, const at::Tensor& prompt_embeds,
                           const at::Tensor& prompt_mask, int64_t steps) {
  at::NoGradGuard no_grad;
  LlamaDecoderState state = model.StartDecoding();
  at::Tensor positions = GenerationPositionIds(prompt_mask);
  at::Tensor hidden = model.DecodeStep(prompt_embeds, prompt_mask, positions, &state);
  at::Tensor last_position = positions.narrow(1, positions.size(1) - 1, 1);
  std::vector<at::Tensor> tokens;
  const int64_t batch = prompt_embeds.size(0);
  for (int64_t i = 0; i < steps; ++i) {
    at::Tensor logits = model.LmHead(hidden.narrow(1, hidden.size(1) - 1, 1));  // [B, 1, V]
    at::Tensor next = logits.argmax(-1);                                        // [B, 1]
    tokens.push_back(next);
    if (i + 1 == steps) break;
    last_position = last_position + 1;
    hidden = model.DecodeStep(model.Embed(next), at::ones({batch, 1}, at::kLong), last_position,
                              &state);
  }
  return at::cat(tokens, 1);
}

// The same without a cache: the whole sequence through Hidden() each step.
at::Tensor GreedyWithoutCache(const LlamaModel& model, const at::Tensor& prompt_embeds,
                              const at::Tensor& prompt_mask, int64_t steps) {
  at::NoGradGuard no_grad;
  at::Tensor embeds = prompt_embeds;
  at::Tensor mask = prompt_mask;
  std::vector<at::Tensor> tokens;
  const int64_t batch = prompt_embeds.size(0);
  for (int64_t i = 0; i < steps; ++i) {
    at::Tensor hidden = model.Hidden(embeds, mask, GenerationPositionIds(mask));
    at::Tensor next = model.LmHead(hidden.narrow(1, hidden.size(1) - 1, 1)).argmax(-1);
    tokens.push_back(next);
    embeds = at::cat({embeds, model.Embed(next)}, 1);
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
  }
  return at::cat(tokens, 1);
}

class LlamaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string folder = Checkpoint(GetParam());
    absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(folder);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const std::string golden_path = folder + "/golden.safetensors";
    absl::StatusOr<std::map<std::string, at::Tensor>> golden = LoadSafetensors(golden_path);
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = *std::move(golden);
    absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader = SafetensorsReader::Open(golden_path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    metadata_ = (*reader)->metadata();
  }

  const at::Tensor& G(const std::string& key) {
    auto it = golden_.find(key);
    if (it == golden_.end()) {
      ADD_FAILURE() << "golden file has no " << key;
      static const at::Tensor kEmpty;
      return kEmpty;
    }
    return it->second;
  }

  void ExpectClose(const std::string& what, const at::Tensor& ours, const at::Tensor& ref,
                   double tolerance = kTolerance) {
    ASSERT_TRUE(ours.defined()) << what;
    ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
    const double diff = MaxAbsDiff(ours, ref);
    const double scale = ref.abs().max().item<double>();
    std::cout << "max_abs_diff " << GetParam() << " " << what << " " << diff
              << " (max |reference| " << scale << ")" << std::endl;
    EXPECT_LE(diff, tolerance) << GetParam() << " " << what;
  }

  std::unique_ptr<LlamaModel> model_;
  std::map<std::string, at::Tensor> golden_;
  std::map<std::string, std::string> metadata_;
};

TEST_P(LlamaGoldenTest, ForwardMatchesTransformers) {
  at::NoGradGuard no_grad;
  CausalLmInputs in;
  in.inputs_embeds = model_->Embed(G("input_ids"));
  in.attention_mask = G("attention_mask");
  in.labels = G("labels");
  ASSERT_TRUE(model_->CheckForwardInputs(in).ok()) << model_->CheckForwardInputs(in);
  CausalLmOutput out = model_->Forward(in);
  ExpectClose("logits", out.logits, G("logits"));
  ExpectClose("hidden", out.hidden, G("hidden"));
  ExpectClose("loss", out.loss, G("loss"));
  EXPECT_EQ(out.loss.scalar_type(), at::kFloat);
  EXPECT_EQ(out.loss.dim(), 0);
  // The pieces compose to the same thing.
  at::Tensor hidden = model_->Hidden(in.inputs_embeds, in.attention_mask, at::Tensor());
  EXPECT_TRUE(at::equal(hidden, out.hidden));
  EXPECT_TRUE(at::equal(model_->LmHead(hidden), out.logits));
  // Default positions are 0..S-1 on every row.
  const int64_t batch = in.inputs_embeds.size(0);
  const int64_t length = in.inputs_embeds.size(1);
  at::Tensor arange = at::arange(length, at::kLong).unsqueeze(0).expand({batch, length});
  EXPECT_TRUE(at::equal(model_->Hidden(in.inputs_embeds, in.attention_mask, arange), hidden));
}

// HiddenAt computes the last layer's outputs at a range of positions only;
// it equals Hidden() there, for every family (sliding windows, soft caps,
// sandwich norms, q/k norms), padded rows included, and with and without
// gradients.
TEST_P(LlamaGoldenTest, HiddenAtEqualsHiddenOverThoseColumns) {
  const at::Tensor embeds = model_->Embed(G("input_ids"));
  const at::Tensor& mask = G("attention_mask");
  const at::Tensor positions = GenerationPositionIds(mask);
  at::Tensor whole;
  {
    at::NoGradGuard no_grad;
    whole = model_->Hidden(embeds, mask, positions);
  }
  const int64_t length = embeds.size(1);
  for (const auto& [from, count] : {std::pair<int64_t, int64_t>{0, length},
                                    {length - 1, 1},
                                    {1, length - 2},
                                    {length / 2, 0}}) {
    SCOPED_TRACE(absl::StrCat("from ", from, ", count ", count));
    at::NoGradGuard no_grad;
    const at::Tensor some = model_->HiddenAt(embeds, mask, positions, from, count);
    ASSERT_EQ(some.size(1), count);
    if (count > 0) EXPECT_LE(MaxAbsDiff(some, whole.narrow(1, from, count)), 1e-5);
  }
  // Gradients flow to every input position through the narrowed last layer.
  at::Tensor leaf = embeds.detach().clone().set_requires_grad(true);
  model_->HiddenAt(leaf, mask, positions, length - 2, 2).sum().backward();
  ASSERT_TRUE(leaf.grad().defined());
  EXPECT_GT(leaf.grad().narrow(1, 0, 1).abs().sum().item<double>(), 0);
  EXPECT_THROW(model_->HiddenAt(embeds, mask, positions, length - 1, 2), c10::Error);
}

TEST_P(LlamaGoldenTest, ExplicitPositionIdsMatchTransformers) {
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(GenerationPositionIds(G("attention_mask")), G("position_ids")));
  CausalLmInputs in;
  in.inputs_embeds = model_->Embed(G("input_ids"));
  in.attention_mask = G("attention_mask");
  in.position_ids = G("position_ids");
  ASSERT_TRUE(model_->CheckForwardInputs(in).ok());
  CausalLmOutput out = model_->Forward(in);
  EXPECT_FALSE(out.loss.defined());
  ExpectClose("pos_logits", out.logits, G("pos_logits"));
  ExpectClose("pos_hidden", out.hidden, G("pos_hidden"));
}

TEST_P(LlamaGoldenTest, GreedyGenerationMatchesTransformers) {
  int64_t steps = 0;
  ASSERT_TRUE(absl::SimpleAtoi(metadata_["gen_steps"], &steps));
  std::cout << "gen_min_margin " << GetParam() << " " << G("gen_min_margin").item<double>()
            << std::endl;
  at::Tensor tokens = GreedyWithCache(*model_, G("gen_inputs_embeds"), G("gen_attention_mask"), steps);
  EXPECT_TRUE(at::equal(tokens, G("gen_tokens")))
      << "ours:\n" << tokens << "\nreference:\n" << G("gen_tokens");
  // Without the cache the same tokens come out, except for the dynamic rope
  // past max_position_embeddings (see llama_model.h). phi3's generation
  // passes original_max_position_embeddings, where the cache is recomputed
  // with longrope's long factors, as Phi-3's generate() does.
  const RopeType rope = model_->config().rope_scaling.type;
  if (rope != RopeType::kDynamic) {
    at::Tensor uncached =
        GreedyWithoutCache(*model_, G("gen_inputs_embeds"), G("gen_attention_mask"), steps);
    EXPECT_TRUE(at::equal(uncached, G("gen_tokens")))
        << "ours:\n" << uncached << "\nreference:\n" << G("gen_tokens");
  }
}

TEST_P(LlamaGoldenTest, KvCacheDecodeEqualsHidden) {
  at::NoGradGuard no_grad;
  at::Tensor embeds = model_->Embed(G("input_ids"));
  at::Tensor mask = G("attention_mask");
  int64_t length = embeds.size(1);
  // The dynamic rope recomputes its frequencies from the longest position of
  // each call, so the cache equals one whole run only up to
  // max_position_embeddings. Longrope switches to its long factors past
  // original_max_position_embeddings, where the decode recomputes its cache:
  // each step equals a whole run of the sequence so far (the phi3
  // checkpoint's rows pass that length on the way).
  const RopeScaling& rope = model_->config().rope_scaling;
  const bool dynamic = rope.type == RopeType::kDynamic;
  if (dynamic) length = std::min<int64_t>(length, model_->config().max_position_embeddings);
  if (rope.type == RopeType::kLongrope) {
    ASSERT_GT(length, rope.original_max_position_embeddings + 3);
  }
  embeds = embeds.narrow(1, 0, length);
  mask = mask.narrow(1, 0, length);
  for (bool explicit_positions : {false, true}) {
    at::Tensor positions = explicit_positions ? GenerationPositionIds(mask) : at::Tensor();
    at::Tensor full = model_->Hidden(embeds, mask, positions);
    LlamaDecoderState state = model_->StartDecoding();
    std::vector<at::Tensor> parts;
    std::vector<at::Tensor> wanted;  // each step's positions in a whole run up to it
    int64_t done = 0;
    auto step = [&](int64_t n) {
      parts.push_back(model_->DecodeStep(
          embeds.narrow(1, done, n), mask.narrow(1, done, n),
          explicit_positions ? positions.narrow(1, done, n) : at::Tensor(), &state));
      wanted.push_back(
          model_
              ->Hidden(embeds.narrow(1, 0, done + n), mask.narrow(1, 0, done + n),
                       explicit_positions ? positions.narrow(1, 0, done + n) : at::Tensor())
              .narrow(1, done, n));
      done += n;
    };
    // Three positions, then two, then one at a time.
    step(3);
    step(2);
    while (done < length) step(1);
    EXPECT_EQ(state.length, length);
    ASSERT_EQ(state.keys.size(), static_cast<size_t>(model_->config().num_hidden_layers));
    EXPECT_EQ(state.keys[0].sizes(),
              (std::vector<int64_t>{embeds.size(0), model_->config().num_key_value_heads, length,
                                    model_->config().head_dim}));
    // Padded query rows attend to nothing real; compare the real positions.
    at::Tensor real = (mask != 0).unsqueeze(-1);
    const double diff = MaxAbsDiff(at::cat(parts, 1) * real, at::cat(wanted, 1) * real);
    if (rope.type != RopeType::kLongrope) {
      EXPECT_LE(MaxAbsDiff(at::cat(wanted, 1) * real, full * real), 1e-5);  // causal
    }
    std::cout << "max_abs_diff " << GetParam() << " kv_cache_vs_hidden"
              << (explicit_positions ? "_positions " : " ") << diff << std::endl;
    // fp32 summation order: a few ulps of the states' scale (Gemma's scaled
    // embeddings make them larger).
    const double scale = (full * real).abs().max().item<double>();
    EXPECT_LE(diff, std::max(1e-5, 3e-6 * scale));
  }
  if (dynamic) {
    // Past max_position_embeddings the whole run rescales every position.
    at::Tensor all = model_->Embed(G("input_ids"));
    ASSERT_GT(all.size(1), length);
    at::Tensor whole = model_->Hidden(all, G("attention_mask"), at::Tensor());
    at::Tensor prefix = model_->Hidden(embeds, mask, at::Tensor());
    EXPECT_GT(MaxAbsDiff(whole.narrow(1, 0, length).select(0, 0), prefix.select(0, 0)), 1e-3);
  }
}

TEST_P(LlamaGoldenTest, ParametersAreFrozenAndCounted) {
  int64_t expected = 0;
  ASSERT_TRUE(absl::SimpleAtoi(metadata_["num_parameters"], &expected));
  EXPECT_EQ(model_->num_parameters(), expected);
  int64_t total = 0;
  for (const at::Tensor& p : model_->Parameters()) {
    EXPECT_FALSE(p.requires_grad());
    total += p.numel();
  }
  EXPECT_EQ(total, expected);
  EXPECT_EQ(model_->word_embeddings().sizes(),
            (std::vector<int64_t>{model_->config().vocab_size, model_->config().hidden_size}));
  EXPECT_EQ(model_->dtype(), at::kFloat);
  EXPECT_TRUE(model_->device().is_cpu());
}

TEST_P(LlamaGoldenTest, OnlyThePromptGetsGradients) {
  const int64_t batch = G("input_ids").size(0);
  const int64_t d = model_->config().hidden_size;
  at::Tensor prompt = (at::randn({3, d}) * 0.3).set_requires_grad(true);
  CausalLmInputs in;
  in.inputs_embeds =
      at::cat({prompt.unsqueeze(0).expand({batch, 3, d}), model_->Embed(G("input_ids"))}, 1);
  in.attention_mask = at::cat({at::ones({batch, 3}, at::kLong), G("attention_mask")}, 1);
  in.labels = at::cat({at::full({batch, 3}, -100, at::kLong), G("labels")}, 1);
  ASSERT_TRUE(model_->CheckForwardInputs(in).ok());
  CausalLmOutput out = model_->Forward(in);
  out.loss.backward();
  ASSERT_TRUE(prompt.grad().defined());
  EXPECT_GT(prompt.grad().abs().sum().item<double>(), 0);
  for (const at::Tensor& p : model_->Parameters()) EXPECT_FALSE(p.grad().defined());
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, LlamaGoldenTest,
                         ::testing::Values("llama_gqa", "llama_linear", "llama_dynamic", "qwen2",
                                           "qwen3", "phi3", "gemma", "gemma2", "gemma3",
                                           "mistral"));

TEST(LlamaModelTest, ConfigsAreReadAsTransformersReadsThem) {
  auto load = [](const std::string& name) {
    absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(Checkpoint(name));
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  };
  std::unique_ptr<LlamaModel> qwen2 = load("qwen2");
  ASSERT_NE(qwen2, nullptr);
  EXPECT_EQ(qwen2->config().layer_sliding_window, (std::vector<int>{0, 6, 6}));
  EXPECT_TRUE(qwen2->config().qkv_bias);
  EXPECT_FALSE(qwen2->config().o_bias);
  EXPECT_TRUE(qwen2->config().tie_word_embeddings);
  EXPECT_EQ(qwen2->config().rope_scaling.type, RopeType::kYarn);
  EXPECT_EQ(qwen2->config().eos_token_ids, (std::vector<int>{2, 3}));
  std::unique_ptr<LlamaModel> qwen3 = load("qwen3");
  ASSERT_NE(qwen3, nullptr);
  EXPECT_EQ(qwen3->config().head_dim, 128);  // absent from config.json: Qwen3Config's default
  EXPECT_TRUE(qwen3->config().qk_norm);
  EXPECT_TRUE(qwen3->config().qkv_bias);
  EXPECT_TRUE(qwen3->config().o_bias);
  EXPECT_EQ(qwen3->config().layer_sliding_window, (std::vector<int>{0, 5}));
  std::unique_ptr<LlamaModel> phi3 = load("phi3");
  ASSERT_NE(phi3, nullptr);
  EXPECT_EQ(phi3->config().head_dim, 16);
  EXPECT_EQ(phi3->config().rotary_dim, 12);  // partial_rotary_factor 0.75
  EXPECT_EQ(phi3->config().rope_scaling.type, RopeType::kLongrope);
  EXPECT_EQ(phi3->config().rope_scaling.original_max_position_embeddings, 16);
  EXPECT_EQ(phi3->config().rms_norm_eps, 1e-5);
  std::unique_ptr<LlamaModel> gemma = load("gemma");
  ASSERT_NE(gemma, nullptr);
  EXPECT_TRUE(gemma->config().gemma);
  EXPECT_FALSE(gemma->config().sandwich_norms);
  EXPECT_EQ(gemma->config().activation, T5Activation::kGeluPytorchTanh);  // "gelu" in the file
  std::unique_ptr<LlamaModel> gemma2 = load("gemma2");
  ASSERT_NE(gemma2, nullptr);
  EXPECT_TRUE(gemma2->config().gemma);
  EXPECT_FALSE(gemma2->config().qk_norm);
  EXPECT_FALSE(gemma2->config().sliding_rope);
  EXPECT_EQ(gemma2->config().layer_sliding_window, (std::vector<int>{5, 0, 5}));
  EXPECT_EQ(gemma2->config().attn_logit_softcapping, 2.0);
  EXPECT_EQ(gemma2->config().final_logit_softcapping, 8.0);
  std::unique_ptr<LlamaModel> gemma3 = load("gemma3");
  ASSERT_NE(gemma3, nullptr);
  EXPECT_TRUE(gemma3->config().gemma);
  EXPECT_EQ(gemma3->config().layer_sliding_window, (std::vector<int>{5, 0, 5}));
  EXPECT_EQ(gemma3->config().rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(gemma3->config().rope_theta, 1e6);
  EXPECT_EQ(gemma3->config().sliding_rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(gemma3->config().sliding_rope_theta, 1e4);
  EXPECT_EQ(gemma3->config().final_logit_softcapping, 30.0);
  EXPECT_EQ(gemma3->config().activation, T5Activation::kGeluPytorchTanh);
  ASSERT_TRUE(gemma3->embedding_scale().defined());
  EXPECT_FLOAT_EQ(gemma3->embedding_scale().item<float>(), 8.0f);
  std::unique_ptr<LlamaModel> mistral = load("mistral");
  ASSERT_NE(mistral, nullptr);
  EXPECT_EQ(mistral->config().layer_sliding_window, (std::vector<int>{5, 5}));
  EXPECT_EQ(mistral->config().head_dim, 24);
  std::unique_ptr<LlamaModel> linear = load("llama_linear");
  ASSERT_NE(linear, nullptr);
  EXPECT_EQ(linear->config().rope_scaling.type, RopeType::kLinear);
  EXPECT_EQ(linear->config().rope_theta, 20000.0);
  EXPECT_EQ(linear->config().activation, T5Activation::kGeluNew);
  EXPECT_TRUE(linear->config().mlp_bias);
}

// Reduced precision: the same checkpoint in bf16 (stored bf16, so the
// weights are exact) stays near the fp32 reference.
TEST(LlamaModelTest, Bfloat16RunsNearTheReference) {
  LlamaLoadOptions options;
  options.dtype = at::kBFloat16;
  absl::StatusOr<std::unique_ptr<LlamaModel>> model =
      LlamaModel::Load(Checkpoint("llama_gqa"), options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->dtype(), at::kBFloat16);
  absl::StatusOr<std::map<std::string, at::Tensor>> golden =
      LoadSafetensors(Checkpoint("llama_gqa") + "/golden.safetensors");
  ASSERT_TRUE(golden.ok());
  at::NoGradGuard no_grad;
  CausalLmInputs in;
  in.inputs_embeds = (*model)->Embed(golden->at("input_ids"));
  in.attention_mask = golden->at("attention_mask");
  in.labels = golden->at("labels");
  ASSERT_TRUE((*model)->CheckForwardInputs(in).ok()) << (*model)->CheckForwardInputs(in);
  CausalLmOutput out = (*model)->Forward(in);
  EXPECT_EQ(out.logits.scalar_type(), at::kBFloat16);
  EXPECT_EQ(out.loss.scalar_type(), at::kFloat);
  at::Tensor real = (golden->at("attention_mask") != 0).unsqueeze(-1);
  const double diff = MaxAbsDiff(out.logits * real, golden->at("logits") * real);
  const double loss_diff = std::abs(out.loss.item<double>() - golden->at("loss").item<double>());
  std::cout << "bf16 llama_gqa logits max_abs_diff " << diff << " loss diff " << loss_diff
            << std::endl;
  EXPECT_LE(diff, 0.25);
  EXPECT_LE(loss_diff, 0.05);
}

TEST(LlamaModelTest, CheckForwardInputsNamesTheProblem) {
  absl::StatusOr<std::unique_ptr<LlamaModel>> loaded = LlamaModel::Load(Checkpoint("mistral"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const LlamaModel& model = **loaded;
  const int64_t d = model.config().hidden_size;
  auto message = [&](const CausalLmInputs& in) {
    absl::Status s = model.CheckForwardInputs(in);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return std::string(s.message());
  };
  CausalLmInputs in;
  EXPECT_THAT(message(in), HasSubstr("inputs_embeds is undefined"));
  in.inputs_embeds = at::zeros({2, 4, d + 1});
  EXPECT_THAT(message(in), HasSubstr("inputs_embeds must be [batch, length, 64]"));
  in.inputs_embeds = at::zeros({2, 4, d}, at::kDouble);
  EXPECT_THAT(message(in), HasSubstr("dtype"));
  in.inputs_embeds = at::zeros({2, 4, d});
  in.attention_mask = at::ones({2, 5});
  EXPECT_THAT(message(in), HasSubstr("attention_mask must be [2, 4]"));
  in.attention_mask = at::ones({2, 4});
  in.position_ids = at::zeros({2, 4});
  EXPECT_THAT(message(in), HasSubstr("position_ids must be integers"));
  in.position_ids = at::full({2, 4}, -1, at::kLong);
  EXPECT_THAT(message(in), HasSubstr("negative"));
  in.position_ids = at::Tensor();
  in.labels = at::full({2, 4}, model.config().vocab_size, at::kLong);
  EXPECT_THAT(message(in), HasSubstr("labels hold ids outside"));
  in.labels = at::full({2, 4}, -100, at::kLong);
  EXPECT_TRUE(model.CheckForwardInputs(in).ok());
  // And the hot path throws instead of crashing.
  in.inputs_embeds = at::zeros({2, 4, d + 1});
  EXPECT_THROW(model.Forward(in), c10::Error);
}

class LlamaModelErrorsTest : public ::testing::Test {
 protected:
  // A writable copy of a checkpoint folder; a fresh one per call.
  std::string Copy(const std::string& fixture) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dst = std::string(tmp ? tmp : "/tmp") + "/" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                            "_" + std::to_string(copies_++) + "_" + fixture;
    fs::remove_all(dst);
    fs::create_directories(dst);
    for (const fs::directory_entry& entry : fs::directory_iterator(Checkpoint(fixture))) {
      const std::string target = dst + "/" + entry.path().filename().string();
      fs::copy_file(fs::canonical(entry.path()), target);
      fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write);
    }
    return dst;
  }

  void EditConfig(const std::string& folder, const std::function<void(nlohmann::json&)>& edit) {
    const std::string path = folder + "/config.json";
    nlohmann::json config = nlohmann::json::parse(::mpt::testing::ReadFile(path));
    edit(config);
    ::mpt::testing::WriteFile(path, config.dump(2));
  }

  // A copy of `fixture` whose model.safetensors lacks `tensor` (or, with
  // `replacement` defined, holds that instead); its folder.
  std::string WithTensor(const std::string& fixture, const std::string& tensor,
                         const at::Tensor& replacement = at::Tensor()) {
    const std::string folder = Copy(fixture);
    const std::string file = folder + "/model.safetensors";
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = LoadSafetensors(file);
    EXPECT_TRUE(tensors.ok()) << tensors.status();
    if (!tensors.ok()) return folder;
    if (replacement.defined()) {
      (*tensors)[tensor] = replacement;
    } else {
      tensors->erase(tensor);
    }
    fs::remove(file);
    EXPECT_TRUE(SaveSafetensors(file, *tensors).ok());
    return folder;
  }

  int copies_ = 0;
};

TEST_F(LlamaModelErrorsTest, UnknownModelType) {
  const std::string folder = Copy("llama_linear");
  EditConfig(folder, [](nlohmann::json& c) { c["model_type"] = "gpt_neox"; });
  absl::Status s = LlamaModel::Load(folder).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(folder + "/config.json"), HasSubstr("'model_type'"),
                    HasSubstr("gpt_neox"), HasSubstr("\"llama\"")));
}

TEST_F(LlamaModelErrorsTest, UnsupportedRopeScalingType) {
  const std::string folder = Copy("qwen2");
  EditConfig(folder, [](nlohmann::json& c) { c["rope_scaling"]["type"] = "proportional"; });
  absl::Status s = LlamaModel::Load(folder).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(folder + "/config.json"), HasSubstr("'rope_scaling.type'"),
                    HasSubstr("proportional"), HasSubstr("not supported")));

  const std::string gqa = Copy("llama_gqa");
  EditConfig(gqa, [](nlohmann::json& c) { c["rope_parameters"].erase("low_freq_factor"); });
  s = LlamaModel::Load(gqa).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(gqa + "/config.json"),
                    HasSubstr("'rope_parameters.low_freq_factor' is missing")));
}

TEST_F(LlamaModelErrorsTest, MissingShard) {
  const std::string folder = Copy("llama_gqa");
  fs::remove(folder + "/model-00002-of-00002.safetensors");
  absl::Status s = LlamaModel::Load(folder).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(folder + "/model.safetensors.index.json"),
                    HasSubstr("model-00002-of-00002.safetensors")));
}

TEST_F(LlamaModelErrorsTest, MisshapenTensor) {
  const std::string folder =
      WithTensor("mistral", "model.layers.1.self_attn.k_proj.weight", at::zeros({48, 64}));
  absl::Status s = LlamaModel::Load(folder).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("\"model.layers.1.self_attn.k_proj.weight\""),
                    HasSubstr("has shape [48, 64], expected [24, 64]"),
                    HasSubstr(folder + "/model.safetensors")));
}

TEST_F(LlamaModelErrorsTest, MissingHeadOfAnUntiedModel) {
  const std::string folder = WithTensor("mistral", "lm_head.weight");
  absl::Status s = LlamaModel::Load(folder).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr(folder), HasSubstr("\"lm_head.weight\""),
                    HasSubstr("tie_word_embeddings")));
}

// A tensor one family's config asks for: missing, named with its shape.
TEST_F(LlamaModelErrorsTest, MissingFamilyTensors) {
  struct Case {
    const char* fixture;
    const char* tensor;
    const char* shape;
  };
  for (const Case& c : {Case{"qwen2", "model.layers.2.self_attn.v_proj.bias", "[32]"},
                        Case{"qwen3", "model.layers.1.self_attn.k_norm.weight", "[128]"},
                        Case{"phi3", "model.layers.0.mlp.gate_up_proj.weight", "[192, 64]"},
                        Case{"phi3", "model.layers.1.self_attn.qkv_proj.weight", "[128, 64]"}}) {
    absl::Status s = LlamaModel::Load(WithTensor(c.fixture, c.tensor)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.tensor;
    EXPECT_THAT(std::string(s.message()),
                AllOf(HasSubstr(absl::StrCat("missing tensor \"", c.tensor, "\"")),
                      HasSubstr(c.shape)));
  }
}

// A multimodal Gemma 3 folder (model_type "gemma3": the language model in
// text_config, its tensors under "language_model.model." as released, or
// "model.language_model." as transformers names its modules, beside a vision
// tower that is not loaded) computes what the same weights compute as a
// gemma3_text model without the final logit cap, which the golden proves
// equal to transformers' (transformers' Gemma3ForConditionalGeneration
// equals its Gemma3ForCausalLM on text, but does not cap the logits).
TEST_F(LlamaModelErrorsTest, MultimodalGemma3FolderIsItsTextModel) {
  const std::string uncapped = Copy("gemma3");
  EditConfig(uncapped, [](nlohmann::json& c) {
    ASSERT_EQ(c["final_logit_softcapping"], 30.0);
    c["final_logit_softcapping"] = nullptr;
  });
  absl::StatusOr<std::unique_ptr<LlamaModel>> text = LlamaModel::Load(uncapped);
  ASSERT_TRUE(text.ok()) << text.status();
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::tensor({2, 17, 300, 5, 99, 41, 7, 250}, at::kLong).view({1, 8});
  const at::Tensor mask = at::ones({1, 8}, at::kLong);
  auto logits = [&](const LlamaModel& m) {
    return m.LmHead(m.Hidden(m.Embed(ids), mask, GenerationPositionIds(mask)));
  };
  const at::Tensor want = logits(**text);

  for (const std::string prefix : {"language_model.model.", "model.language_model."}) {
    const std::string folder = Copy("gemma3");
    EditConfig(folder, [](nlohmann::json& c) {
      nlohmann::json text_config = c;
      c = nlohmann::json{{"architectures", {"Gemma3ForConditionalGeneration"}},
                         {"model_type", "gemma3"},
                         {"text_config", text_config},
                         {"vision_config", {{"model_type", "siglip_vision_model"}}}};
    });
    const std::string file = folder + "/model.safetensors";
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = LoadSafetensors(file);
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    std::map<std::string, at::Tensor> renamed;
    for (const auto& [name, t] : *tensors) {
      ASSERT_EQ(name.rfind("model.", 0), 0u) << name;
      renamed[prefix + name.substr(6)] = t;
    }
    renamed["vision_tower.vision_model.post_layernorm.weight"] = at::ones({4});
    fs::remove(file);
    ASSERT_TRUE(SaveSafetensors(file, renamed).ok());

    absl::StatusOr<std::unique_ptr<LlamaModel>> mm = LlamaModel::Load(folder);
    ASSERT_TRUE(mm.ok()) << mm.status();
    EXPECT_TRUE((*mm)->config().multimodal_gemma3);
    EXPECT_EQ((*mm)->num_parameters(), (*text)->num_parameters());
    EXPECT_TRUE(at::equal(logits(**mm), want)) << prefix;

    // Untied at the top level: the head is required, named as stored.
    EditConfig(folder, [](nlohmann::json& c) { c["tie_word_embeddings"] = false; });
    absl::Status s = LlamaModel::Load(folder).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(prefix == "language_model.model." ? "\"language_model.lm_head.weight\""
                                                            : "\"lm_head.weight\""));
  }
}

TEST_F(LlamaModelErrorsTest, BadDtypeOption) {
  LlamaLoadOptions options;
  options.dtype = at::kInt;
  absl::Status s = LlamaModel::Load(Checkpoint("mistral"), options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("LlamaLoadOptions.dtype"));
}

}  // namespace
}  // namespace mpt
