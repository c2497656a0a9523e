// Proves that T5Model is T5: on two small random checkpoints (the original
// T5 with ReLU and a tied, scaled head; T5 v1.1 with gated GELU, an untied
// head and sharded weights) our encoder and decoder states, logits, loss,
// greedy generations and rank-classification scores match what Hugging Face
// transformers and PEFT computed (tools/make_golden.py; the two mT5
// checkpoints come from tools/make_golden_mt5.py), with and without
// soft prompts in each of PEFT's layouts, and only the prompt gets
// gradients.
//
// The max abs differences seen are printed as "max_abs_diff ..." lines.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/numbers.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/eval/generation.h"
#include "worker/lm/t5_prompted_model.h"
#include "worker/model/t5_model.h"
#include "worker/model/torch_tensors.h"
#include "worker/prompts/prompt_inputs.h"

namespace mpt {
namespace {

// fp32 agreement required with the reference (absolute).
constexpr double kTolerance = 1e-4;

std::string TestData(const std::string& name) {
  return ::mpt::testing::DataPath("tests/testdata/" + name);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.detach().to(at::kDouble) - b.detach().to(at::kDouble)).abs().max().item<double>();
}

class T5GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string name = GetParam();
    absl::StatusOr<std::unique_ptr<T5Model>> model = T5Model::Load(TestData(name));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const std::string golden_path = TestData("golden_" + name + ".safetensors");
    absl::StatusOr<std::map<std::string, at::Tensor>> golden = LoadSafetensors(golden_path);
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = *std::move(golden);
    absl::StatusOr<std::unique_ptr<SafetensorsReader>> reader =
        SafetensorsReader::Open(golden_path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    const auto& meta = (*reader)->metadata();
    ASSERT_TRUE(meta.count("num_virtual_tokens"));
    ASSERT_TRUE(absl::SimpleAtoi(meta.at("num_virtual_tokens"), &num_virtual_tokens_));
    for (const char* key : {"input_ids", "attention_mask", "labels", "prompt"}) {
      ASSERT_TRUE(golden_.count(key)) << key;
    }
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

  // Compares one quantity and prints the difference seen.
  void ExpectClose(const std::string& what, const at::Tensor& ours, const std::string& key,
                   double tolerance = kTolerance) {
    const at::Tensor& ref = G(key);
    ASSERT_TRUE(ours.defined()) << what;
    ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
    const double diff = MaxAbsDiff(ours, ref);
    const double scale = ref.abs().max().item<double>();
    std::cout << "max_abs_diff " << GetParam() << " " << what << " " << diff
              << " (max |reference| " << scale << ", relative " << diff / std::max(scale, 1e-30)
              << ")" << std::endl;
    EXPECT_LE(diff, tolerance) << GetParam() << " " << what;
  }

  void ExpectOutputs(const std::string& prefix, const T5Output& out) {
    ExpectClose(prefix + "encoder_hidden", out.encoder_hidden, prefix + "encoder_hidden");
    ExpectClose(prefix + "decoder_hidden", out.decoder_hidden, prefix + "decoder_hidden");
    ExpectClose(prefix + "logits", out.logits, prefix + "logits");
    ExpectClose(prefix + "loss", out.loss, prefix + "loss");
  }

  T5ForwardInputs Prompted(const PromptLayout& layout, const at::Tensor& prompt) {
    return BuildPromptedInputs(*model_, prompt, layout, G("input_ids"), G("attention_mask"),
                               G("labels"));
  }

  std::unique_ptr<T5Model> model_;
  std::map<std::string, at::Tensor> golden_;
  int num_virtual_tokens_ = 0;
};

TEST_P(T5GoldenTest, BaseModelMatches) {
  at::NoGradGuard no_grad;
  const at::Tensor& labels = G("labels");
  EXPECT_TRUE(at::equal(model_->ShiftRight(labels), G("decoder_input_ids")));
  T5ForwardInputs in;
  in.inputs_embeds = model_->Embed(G("input_ids"));
  in.attention_mask = G("attention_mask");
  in.decoder_inputs_embeds = model_->Embed(model_->ShiftRight(labels));
  in.labels = labels;
  ASSERT_TRUE(model_->CheckForwardInputs(in).ok()) << model_->CheckForwardInputs(in);
  T5Output out = model_->Forward(in);
  ExpectOutputs("", out);
  // The pieces compose to the same thing.
  at::Tensor encoder = model_->Encode(in.inputs_embeds, in.attention_mask);
  at::Tensor decoder =
      model_->Decode(in.decoder_inputs_embeds, at::Tensor(), encoder, in.attention_mask);
  EXPECT_TRUE(at::equal(model_->LmHead(decoder), out.logits));
}

TEST_P(T5GoldenTest, PromptTuningOneSubmodule) {
  at::NoGradGuard no_grad;
  const int nv = num_virtual_tokens_;
  // PEFT's p1 prompt is prompt[:nv].
  ExpectOutputs("p1_", model_->Forward(Prompted(PromptLayout::Peft(false, nv, 1),
                                                G("prompt").narrow(0, 0, nv))));
}

TEST_P(T5GoldenTest, PromptTuningTwoSubmodules) {
  at::NoGradGuard no_grad;
  // PROMPT_TUNING never prompts the decoder, even with two submodules.
  const PromptLayout layout = PromptLayout::Peft(false, num_virtual_tokens_, 2);
  EXPECT_FALSE(layout.prompt_decoder);
  ExpectOutputs("p2_", model_->Forward(Prompted(layout, G("prompt"))));
}

TEST_P(T5GoldenTest, MultitaskTwoSubmodulesPromptsTheDecoder) {
  at::NoGradGuard no_grad;
  const int nv = num_virtual_tokens_;
  const PromptLayout layout = PromptLayout::Peft(true, nv, 2);
  EXPECT_TRUE(layout.prompt_decoder);
  T5ForwardInputs in = Prompted(layout, G("prompt"));
  EXPECT_EQ(in.labels.size(1), G("labels").size(1) + nv);
  EXPECT_TRUE((in.labels.narrow(1, 0, nv) == -100).all().item<bool>());
  ExpectOutputs("mt2_", model_->Forward(in));
  // The (nv, nsub) overload means this layout.
  T5ForwardInputs same = BuildPromptedInputs(*model_, G("prompt"), nv, 2, G("input_ids"),
                                             G("attention_mask"), G("labels"));
  EXPECT_TRUE(at::equal(same.decoder_inputs_embeds, in.decoder_inputs_embeds));
  // A per-example [B, T, d] prompt gives the same as a shared [T, d] one.
  const int64_t batch = G("input_ids").size(0);
  at::Tensor per_example = G("prompt").unsqueeze(0).expand({batch, -1, -1}).contiguous();
  EXPECT_LE(MaxAbsDiff(model_->Forward(Prompted(layout, per_example)).logits,
                       model_->Forward(in).logits),
            1e-6);
}

// The prompted model behind the stages returns PEFT's outputs at the target
// positions only: with the decoder prefix the LM head skips the prefix's
// positions, whose labels are -100.
TEST_P(T5GoldenTest, PromptedModelOutputsAtTargetPositions) {
  at::NoGradGuard no_grad;
  const int nv = num_virtual_tokens_;
  const T5PromptedModel prompted(model_.get());
  const at::Tensor& labels = G("labels");
  const int64_t targets = labels.size(1);
  for (const bool multitask : {false, true}) {
    SCOPED_TRACE(multitask ? "multitask, two submodules" : "prompt tuning, two submodules");
    const std::string key = multitask ? "mt2_" : "p2_";
    const int64_t prefix = multitask ? nv : 0;
    PromptedOutput out = prompted.Forward(G("prompt"), PromptLayout::Peft(multitask, nv, 2),
                                          G("input_ids"), G("attention_mask"), labels);
    ASSERT_EQ(out.logits.size(1), targets);
    EXPECT_TRUE(at::equal(out.labels, labels.to(at::kLong)));
    for (const auto& [name, ours] : {std::pair<std::string, at::Tensor>{"logits", out.logits},
                                     {"decoder_hidden", out.hidden}}) {
      const at::Tensor reference = G(key + name).narrow(1, prefix, targets);
      const double diff = MaxAbsDiff(ours, reference);
      std::cout << "max_abs_diff " << GetParam() << " prompted_" << key << name << " " << diff
                << std::endl;
      EXPECT_LE(diff, kTolerance) << key << name;
    }
  }
}

TEST_P(T5GoldenTest, GreedyGenerationMatches) {
  at::Tensor embeds = model_->Embed(G("input_ids"));
  at::Tensor generated = GreedyGenerate(*model_, embeds, G("attention_mask"), 8);
  EXPECT_TRUE(at::equal(generated, G("gen_output")))
      << "ours:\n" << generated << "\nreference:\n" << G("gen_output");
  // PEFT's generate puts prompt[:nv] in front of the encoder input only.
  at::Tensor prompted = GreedyGenerateWithPrompt(*model_, G("prompt"), num_virtual_tokens_,
                                                 G("input_ids"), G("attention_mask"), 8);
  EXPECT_TRUE(at::equal(prompted, G("p1_gen_output")))
      << "ours:\n" << prompted << "\nreference:\n" << G("p1_gen_output");
}

TEST_P(T5GoldenTest, IncrementalDecodingMatchesFullDecode) {
  at::NoGradGuard no_grad;
  at::Tensor encoder = model_->Encode(model_->Embed(G("input_ids")), G("attention_mask"));
  at::Tensor decoder_embeds = model_->Embed(G("decoder_input_ids"));
  at::Tensor full = model_->Decode(decoder_embeds, at::Tensor(), encoder, G("attention_mask"));
  T5DecoderState state = model_->StartDecoding(encoder, G("attention_mask"));
  std::vector<at::Tensor> steps;
  // One position, then two at once, then the rest one by one.
  int64_t done = 0;
  const int64_t length = decoder_embeds.size(1);
  for (int64_t n : {int64_t{1}, int64_t{2}}) {
    steps.push_back(model_->DecodeStep(decoder_embeds.narrow(1, done, n), at::Tensor(), &state));
    done += n;
  }
  for (; done < length; ++done) {
    steps.push_back(model_->DecodeStep(decoder_embeds.narrow(1, done, 1), at::Tensor(), &state));
  }
  EXPECT_EQ(state.length, length);
  const double diff = MaxAbsDiff(at::cat(steps, 1), full);
  std::cout << "max_abs_diff " << GetParam() << " incremental_vs_full " << diff << std::endl;
  EXPECT_LE(diff, 1e-5);
}

// Decode(..., outputs_from = p) runs the last block at positions p.. only:
// the same hidden states there as the full decode, the same gradients into
// the decoder inputs and the encoder output, and a cache that continues
// as the full one does.
TEST_P(T5GoldenTest, DecodeFromPositionMatchesFullDecode) {
  const at::Tensor encoder_in =
      model_->Encode(model_->Embed(G("input_ids")), G("attention_mask")).detach();
  const at::Tensor embeds_in = model_->Embed(G("decoder_input_ids")).detach();
  const int64_t length = embeds_in.size(1);
  ASSERT_GE(length, 3);
  at::manual_seed(17);
  at::Tensor probe = at::randn({embeds_in.size(0), length, embeds_in.size(2)},
                               at::TensorOptions().dtype(embeds_in.dtype()));
  for (const int64_t from : {int64_t{1}, length - 1}) {
    SCOPED_TRACE(::testing::Message() << "outputs_from " << from);
    auto run = [&](int64_t outputs_from, at::Tensor* grad_embeds, at::Tensor* grad_encoder) {
      at::Tensor embeds = embeds_in.clone().requires_grad_(true);
      at::Tensor encoder = encoder_in.clone().requires_grad_(true);
      at::Tensor hidden =
          model_->Decode(embeds, at::Tensor(), encoder, G("attention_mask"), outputs_from);
      if (outputs_from == 0) hidden = hidden.narrow(1, from, length - from);
      (hidden * probe.narrow(1, from, length - from)).sum().backward();
      *grad_embeds = embeds.grad();
      *grad_encoder = encoder.grad();
      return hidden.detach();
    };
    at::Tensor full_embeds, full_encoder, part_embeds, part_encoder;
    const at::Tensor full = run(0, &full_embeds, &full_encoder);
    const at::Tensor part = run(from, &part_embeds, &part_encoder);
    ASSERT_EQ(part.sizes(), full.sizes());
    // Float rounding of differently shaped products, relative to the values
    // (up to 1.5e-6 of the scale over 30 random probes on each checkpoint;
    // a wrong row or a missing gradient path is of the order of the values).
    auto close = [](const at::Tensor& a, const at::Tensor& b) -> ::testing::AssertionResult {
      const double scale = 1 + b.abs().max().item<double>();
      const double diff = MaxAbsDiff(a, b);
      if (diff <= 1e-5 * scale) return ::testing::AssertionSuccess();
      return ::testing::AssertionFailure()
             << "max |difference| " << diff << " over a scale of " << scale;
    };
    EXPECT_TRUE(close(part, full));
    EXPECT_TRUE(close(part_embeds, full_embeds));
    EXPECT_TRUE(close(part_encoder, full_encoder));
  }
  // The state after a narrowed step holds every position's keys and values.
  at::NoGradGuard no_grad;
  T5DecoderState narrowed = model_->StartDecoding(encoder_in, G("attention_mask"));
  T5DecoderState whole = model_->StartDecoding(encoder_in, G("attention_mask"));
  model_->DecodeStep(embeds_in.narrow(1, 0, length - 1), at::Tensor(), &narrowed, length - 2);
  model_->DecodeStep(embeds_in.narrow(1, 0, length - 1), at::Tensor(), &whole);
  EXPECT_EQ(narrowed.length, whole.length);
  EXPECT_LE(MaxAbsDiff(model_->DecodeStep(embeds_in.narrow(1, length - 1, 1), {}, &narrowed),
                       model_->DecodeStep(embeds_in.narrow(1, length - 1, 1), {}, &whole)),
            1e-5);
  EXPECT_THROW(model_->DecodeStep(embeds_in, {}, &whole, length), c10::Error);
}

TEST_P(T5GoldenTest, RankClassificationMatches) {
  const at::Tensor& cand_ids = G("cand_ids");
  const int64_t batch = G("input_ids").size(0);
  const at::Tensor& ref = G("cand_scores");
  const int64_t k = ref.size(1);
  RankResult result = RankClassify(*model_, model_->Embed(G("input_ids")), G("attention_mask"),
                                   cand_ids.view({batch, k, cand_ids.size(1)}));
  ExpectClose("cand_scores", result.scores, "cand_scores");
  EXPECT_TRUE(at::equal(result.best, ref.argmax(-1)));
}

TEST_P(T5GoldenTest, RankClassificationWithDecoderPrefixScoresTargetsOnly) {
  // With the decoder prompt of a two-submodule multitask layout, the score of
  // the golden targets equals -(mt2 loss) * (number of target tokens).
  const int nv = num_virtual_tokens_;
  const PromptLayout layout = PromptLayout::Peft(true, nv, 2);
  const at::Tensor& labels = G("labels");
  const int64_t batch = labels.size(0);
  EncoderInputs encoder = BuildPromptedEncoderInputs(*model_, G("prompt"), nv, G("input_ids"),
                                                     G("attention_mask"));
  RankResult result =
      RankClassify(*model_, encoder.inputs_embeds, encoder.attention_mask,
                   labels.view({batch, 1, labels.size(1)}),
                   DecoderPromptRows(*model_, G("prompt"), layout, batch));
  const double tokens = (labels != -100).sum().item<double>();
  const double ours = result.scores.sum().item<double>();
  const double reference = -G("mt2_loss").item<double>() * tokens;
  EXPECT_NEAR(ours, reference, kTolerance * tokens);
}

// RankClassify encodes each example once and continues its K candidates
// from one decoder cache (after the decoder prompt, when there is one): the
// scores equal those of each whole decoder sequence over a repeated encoder
// output. Candidates of 1 to 3 tokens, -100 padded.
TEST_P(T5GoldenTest, RankClassificationSharesEachExampleAcrossCandidates) {
  at::NoGradGuard no_grad;
  const int nv = num_virtual_tokens_;
  const int64_t batch = G("input_ids").size(0), k = 3;
  at::manual_seed(3);
  at::Tensor candidates = at::randint(2, model_->config().vocab_size, {batch, k, 3},
                                      at::TensorOptions().dtype(at::kLong));
  candidates.select(1, 0).narrow(1, 1, 2).fill_(-100);
  candidates.select(1, 2).narrow(1, 2, 1).fill_(-100);
  const at::Tensor labels = candidates.reshape({batch * k, 3});
  for (const bool with_prefix : {false, true}) {
    SCOPED_TRACE(with_prefix ? "decoder prompt" : "no decoder prompt");
    const PromptLayout layout = PromptLayout::Peft(with_prefix, nv, 2);
    EncoderInputs encoder =
        BuildPromptedEncoderInputs(*model_, G("prompt"), nv, G("input_ids"), G("attention_mask"));
    const at::Tensor prefix = DecoderPromptRows(*model_, G("prompt"), layout, batch);
    RankResult result =
        RankClassify(*model_, encoder.inputs_embeds, encoder.attention_mask, candidates, prefix);
    // Whole sequences: the encoder output repeated, [prefix; candidate].
    const at::Tensor encoded = model_->Encode(encoder.inputs_embeds, encoder.attention_mask);
    at::Tensor embeds = model_->Embed(model_->ShiftRight(labels));
    int64_t p = 0;
    if (prefix.defined()) {
      const at::Tensor rows =
          prefix.dim() == 2 ? prefix.unsqueeze(0).expand({batch, -1, -1}) : prefix;
      p = rows.size(1);
      embeds = at::cat({rows.repeat_interleave(k, 0), embeds}, 1);
    }
    at::Tensor hidden = model_->Decode(embeds, at::Tensor(), encoded.repeat_interleave(k, 0),
                                       encoder.attention_mask.repeat_interleave(k, 0));
    hidden = hidden.narrow(1, p, 3);
    const at::Tensor expected = at::log_softmax(model_->LmHead(hidden).to(at::kFloat), -1)
                                    .gather(-1, labels.clamp_min(0).unsqueeze(-1))
                                    .squeeze(-1)
                                    .masked_fill(labels.eq(-100), 0.0)
                                    .sum(-1)
                                    .view({batch, k});
    const double diff = MaxAbsDiff(result.scores, expected);
    std::cout << "max_abs_diff " << GetParam() << " rank_shared_" << with_prefix << " " << diff
              << std::endl;
    EXPECT_LE(diff, kTolerance);
  }
}

TEST_P(T5GoldenTest, OnlyThePromptGetsGradients) {
  for (const bool multitask : {false, true}) {
    SCOPED_TRACE(multitask ? "multitask, two submodules" : "prompt tuning, two submodules");
    const int nv = num_virtual_tokens_;
    at::Tensor prompt = G("prompt").clone().set_requires_grad(true);
    T5Output out =
        model_->Forward(Prompted(PromptLayout::Peft(multitask, nv, 2), prompt));
    ASSERT_TRUE(out.loss.requires_grad());
    out.loss.backward();
    ASSERT_TRUE(prompt.grad().defined());
    EXPECT_GT(prompt.grad().narrow(0, 0, nv).abs().sum().item<double>(), 0.0);
    const double decoder_rows = prompt.grad().narrow(0, nv, nv).abs().sum().item<double>();
    if (multitask) {
      EXPECT_GT(decoder_rows, 0.0);
    } else {
      EXPECT_EQ(decoder_rows, 0.0);  // PEFT's PROMPT_TUNING never uses them
    }
    EXPECT_TRUE(std::isfinite(prompt.grad().abs().sum().item<double>()));
  }
  for (const at::Tensor& weight : model_->Parameters()) {
    EXPECT_FALSE(weight.requires_grad());
    EXPECT_FALSE(weight.grad().defined());
  }
  EXPECT_FALSE(model_->word_embeddings().requires_grad());
}

// The prompt's gradient in fp32 (on a CPU, attention's products and their
// backward through BatchedMatmul's BLAS path) against the same checkpoint
// in float64 (at::matmul everywhere), in both of PEFT's layouts.
TEST_P(T5GoldenTest, PromptGradientMatchesFloat64) {
  absl::StatusOr<std::unique_ptr<T5Model>> f64 =
      T5Model::Load(TestData(GetParam()), T5LoadOptions{c10::Device(c10::kCPU), at::kDouble});
  ASSERT_TRUE(f64.ok()) << f64.status();
  for (const bool multitask : {false, true}) {
    SCOPED_TRACE(multitask ? "multitask" : "prompt tuning");
    const PromptLayout layout = PromptLayout::Peft(multitask, num_virtual_tokens_, 2);
    at::Tensor p32 = G("prompt").clone().set_requires_grad(true);
    at::Tensor p64 = G("prompt").to(at::kDouble).set_requires_grad(true);
    model_->Forward(Prompted(layout, p32)).loss.backward();
    (*f64)
        ->Forward(BuildPromptedInputs(**f64, p64, layout, G("input_ids"), G("attention_mask"),
                                      G("labels")))
        .loss.backward();
    const at::Tensor g64 = p64.grad();
    ASSERT_GT(g64.abs().max().item<double>(), 0.0);
    const double rel = (p32.grad().to(at::kDouble) - g64).abs().max().item<double>() /
                       g64.abs().max().item<double>();
    std::printf("max_rel_diff prompt gradient fp32 vs float64 (%s): %.3g\n",
                multitask ? "multitask" : "prompt tuning", rel);
    EXPECT_LT(rel, 1e-4);
  }
}

TEST_P(T5GoldenTest, ReducedPrecisionStaysClose) {
  absl::StatusOr<std::unique_ptr<T5Model>> bf16 =
      T5Model::Load(TestData(GetParam()), T5LoadOptions{c10::Device(c10::kCPU), at::kBFloat16});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  at::NoGradGuard no_grad;
  T5ForwardInputs in;
  in.inputs_embeds = (*bf16)->Embed(G("input_ids"));
  in.attention_mask = G("attention_mask");
  in.decoder_inputs_embeds = (*bf16)->Embed(G("decoder_input_ids"));
  in.labels = G("labels");
  T5Output out = (*bf16)->Forward(in);
  EXPECT_EQ(out.logits.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
  const double loss = out.loss.item<double>();
  const double reference = G("loss").item<double>();
  std::cout << "bf16 " << GetParam() << " loss " << loss << " vs fp32 " << reference << std::endl;
  EXPECT_NEAR(loss, reference, 0.05 * std::abs(reference) + 0.05);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, T5GoldenTest, ::testing::Values("t5_relu", "t5_gated"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// mT5 (tools/make_golden_mt5.py): as published (untied head,
// tie_word_embeddings false) and with MT5Config's defaults only (head tied
// to the embedding, still unscaled), against MT5ForConditionalGeneration;
// and UMT5 (a relative attention bias in every layer) against
// UMT5ForConditionalGeneration.
INSTANTIATE_TEST_SUITE_P(Mt5Checkpoints, T5GoldenTest,
                         ::testing::Values("mt5", "mt5_tied", "umt5"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace mpt
