// Bad checkpoints and bad inputs give clear errors, never a crash: each test
// copies a fixture folder into TEST_TMPDIR, breaks one thing, and checks the
// status code and that the message names the file and the problem.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "worker/eval/generation.h"
#include "worker/prompts/prompt_inputs.h"
#include "worker/model/t5_model.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string TestData(const std::string& name) {
  return ::mpt::testing::DataPath("tests/testdata/" + name);
}

using ::mpt::testing::ReadFile;
using ::mpt::testing::WriteFile;

nlohmann::json ReadJson(const std::string& path) { return nlohmann::json::parse(ReadFile(path)); }
void WriteJson(const std::string& path, const nlohmann::json& j) { WriteFile(path, j.dump(2)); }

class T5ModelErrorsTest : public ::testing::Test {
 protected:
  // A writable copy of a fixture folder; a fresh one per call.
  std::string Copy(const std::string& fixture) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dst = std::string(tmp ? tmp : "/tmp") + "/" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                            "_" + std::to_string(copies_++) + "_" + fixture;
    fs::remove_all(dst);
    fs::create_directories(dst);
    for (const fs::directory_entry& entry : fs::directory_iterator(TestData(fixture))) {
      const std::string target = dst + "/" + entry.path().filename().string();
      fs::copy_file(fs::canonical(entry.path()), target);
      fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write);
    }
    return dst;
  }

  absl::Status LoadStatus(const std::string& folder, const T5LoadOptions& options = {}) {
    return T5Model::Load(folder, options).status();
  }

  // Rewrites the file holding `name` with `edit` applied to its tensors.
  void EditTensors(const std::string& file,
                   const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = LoadSafetensors(file);
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    edit(*tensors);
    fs::remove(file);
    ASSERT_TRUE(SaveSafetensors(file, *tensors).ok());
  }

  int copies_ = 0;
};

TEST_F(T5ModelErrorsTest, FixturesLoad) {
  for (const char* fixture : {"t5_relu", "t5_gated"}) {
    absl::StatusOr<std::unique_ptr<T5Model>> model = T5Model::Load(TestData(fixture));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_GT((*model)->num_parameters(), 0);
  }
}

TEST_F(T5ModelErrorsTest, MissingConfig) {
  const std::string folder = Copy("t5_relu");
  fs::remove(folder + "/config.json");
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(folder + "/config.json"));
}

TEST_F(T5ModelErrorsTest, UnknownModelType) {
  const std::string folder = Copy("t5_relu");
  nlohmann::json config = ReadJson(folder + "/config.json");
  config["model_type"] = "llama";
  WriteJson(folder + "/config.json", config);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder + "/config.json"),
                                      HasSubstr("model_type"), HasSubstr("llama")));
}

TEST_F(T5ModelErrorsTest, UnknownFeedForward) {
  const std::string folder = Copy("t5_gated");
  nlohmann::json config = ReadJson(folder + "/config.json");
  // Without dense_act_fn, which would decide the activation instead.
  config.erase("dense_act_fn");
  config["feed_forward_proj"] = "gated-swiglu";
  WriteJson(folder + "/config.json", config);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder + "/config.json"),
                                      HasSubstr("feed_forward_proj"), HasSubstr("gated-swiglu")));

  config["dense_act_fn"] = "swiglu";
  WriteJson(folder + "/config.json", config);
  status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder + "/config.json"),
                                      HasSubstr("dense_act_fn"), HasSubstr("swiglu")));
}

// config.json's dense_act_fn and is_gated_act decide the feed-forward, as in
// transformers (found by tools/check_t5_numerics.py): the gated fixture with
// its feed_forward_proj replaced by "relu" still loads its wi_0 / wi_1 and
// computes exactly what it did, and a written dense_act_fn changes the
// activation.
TEST_F(T5ModelErrorsTest, WrittenDenseActFnWinsOverFeedForwardProj) {
  at::NoGradGuard no_grad;
  auto logits = [](const T5Model& model) {
    T5ForwardInputs in;
    at::Tensor ids = at::arange(3, 9, at::kLong).view({1, 6});
    in.inputs_embeds = model.Embed(ids);
    in.decoder_inputs_embeds = model.Embed(ids.narrow(1, 0, 4));
    return model.Forward(in).logits;
  };
  absl::StatusOr<std::unique_ptr<T5Model>> original = T5Model::Load(TestData("t5_gated"));
  ASSERT_TRUE(original.ok()) << original.status();

  const std::string folder = Copy("t5_gated");
  nlohmann::json config = ReadJson(folder + "/config.json");
  ASSERT_EQ(config["dense_act_fn"], "gelu_new");
  ASSERT_EQ(config["is_gated_act"], true);
  config["feed_forward_proj"] = "relu";
  WriteJson(folder + "/config.json", config);
  absl::StatusOr<std::unique_ptr<T5Model>> relu_proj = T5Model::Load(folder);
  ASSERT_TRUE(relu_proj.ok()) << relu_proj.status();
  EXPECT_TRUE(at::equal(logits(**relu_proj), logits(**original)));

  const std::string silu = Copy("t5_gated");
  config["feed_forward_proj"] = "gated-gelu";
  config["dense_act_fn"] = "silu";
  WriteJson(silu + "/config.json", config);
  const std::string gated_silu = Copy("t5_gated");
  config.erase("dense_act_fn");
  config.erase("is_gated_act");
  config["feed_forward_proj"] = "gated-silu";
  WriteJson(gated_silu + "/config.json", config);
  absl::StatusOr<std::unique_ptr<T5Model>> a = T5Model::Load(silu);
  absl::StatusOr<std::unique_ptr<T5Model>> b = T5Model::Load(gated_silu);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(at::equal(logits(**a), logits(**b)));
  EXPECT_FALSE(at::allclose(logits(**a), logits(**original)));
}

TEST_F(T5ModelErrorsTest, ConfigThatDoesNotMatchTheWeights) {
  const std::string folder = Copy("t5_relu");
  nlohmann::json config = ReadJson(folder + "/config.json");
  config["d_ff"] = config["d_ff"].get<int>() + 1;
  WriteJson(folder + "/config.json", config);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder), HasSubstr("DenseReluDense.wi.weight"),
                                      HasSubstr("expected")));
}

TEST_F(T5ModelErrorsTest, TruncatedWeights) {
  const std::string folder = Copy("t5_relu");
  const std::string file = folder + "/model.safetensors";
  const std::string bytes = ReadFile(file);
  WriteFile(file, bytes.substr(0, bytes.size() / 2));
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(file));
  // Only the first few bytes.
  WriteFile(file, bytes.substr(0, 5));
  status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(file));
}

TEST_F(T5ModelErrorsTest, InconsistentHeader) {
  const std::string folder = Copy("t5_relu");
  const std::string file = folder + "/model.safetensors";
  const std::string bytes = ReadFile(file);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | static_cast<uint8_t>(bytes[i]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_length));
  // Claim that one tensor is a few bytes longer than its shape says.
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    info["data_offsets"][1] = info["data_offsets"][1].get<uint64_t>() + 4;
    break;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  WriteFile(file, length + text + bytes.substr(8 + header_length));
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(file));

  WriteFile(file, "this is not a safetensors file at all");
  status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(file));
}

TEST_F(T5ModelErrorsTest, MissingTensor) {
  const std::string folder = Copy("t5_relu");
  const std::string name = "encoder.block.1.layer.0.SelfAttention.k.weight";
  int64_t rows = 0, cols = 0;
  EditTensors(folder + "/model.safetensors", [&](std::map<std::string, at::Tensor>& t) {
    rows = t.at(name).size(0);
    cols = t.at(name).size(1);
    t.erase(name);
  });
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr(folder), HasSubstr(name), HasSubstr("missing"),
                    HasSubstr("[" + std::to_string(rows) + ", " + std::to_string(cols) + "]")));
}

TEST_F(T5ModelErrorsTest, WrongShape) {
  const std::string folder = Copy("t5_relu");
  const std::string name = "decoder.block.0.layer.1.EncDecAttention.o.weight";
  int64_t rows = 0, cols = 0;
  EditTensors(folder + "/model.safetensors", [&](std::map<std::string, at::Tensor>& t) {
    rows = t.at(name).size(0);
    cols = t.at(name).size(1);
    t[name] = at::zeros({rows, cols - 1});
  });
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  const std::string actual = "[" + std::to_string(rows) + ", " + std::to_string(cols - 1) + "]";
  const std::string expected = "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder), HasSubstr(name), HasSubstr(actual),
                                      HasSubstr("expected " + expected)));
}

TEST_F(T5ModelErrorsTest, IntegerWeights) {
  const std::string folder = Copy("t5_relu");
  const std::string name = "encoder.final_layer_norm.weight";
  EditTensors(folder + "/model.safetensors", [&](std::map<std::string, at::Tensor>& t) {
    t[name] = t.at(name).to(at::kLong);
  });
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(name), HasSubstr("I64"), HasSubstr("floating")));
}

TEST_F(T5ModelErrorsTest, ExtraTensorsAreIgnored) {
  const std::string folder = Copy("t5_relu");
  EditTensors(folder + "/model.safetensors", [&](std::map<std::string, at::Tensor>& t) {
    t["encoder.embed_tokens.weight"] = t.at("shared.weight");
    t["something.else"] = at::ones({3});
  });
  absl::StatusOr<std::unique_ptr<T5Model>> model = T5Model::Load(folder);
  EXPECT_TRUE(model.ok()) << model.status();
}

// The shard of the gated fixture that holds `tensor`, from its index.
std::string ShardOf(const std::string& folder, const std::string& tensor) {
  return ReadJson(folder + "/model.safetensors.index.json")["weight_map"][tensor].get<std::string>();
}

TEST_F(T5ModelErrorsTest, UntiedModelWithoutHead) {
  const std::string folder = Copy("t5_gated");
  const std::string shard = ShardOf(folder, "lm_head.weight");
  EditTensors(folder + "/" + shard,
              [](std::map<std::string, at::Tensor>& t) { t.erase("lm_head.weight"); });
  nlohmann::json index = ReadJson(folder + "/model.safetensors.index.json");
  index["weight_map"].erase("lm_head.weight");
  WriteJson(folder + "/model.safetensors.index.json", index);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder), HasSubstr("lm_head.weight"),
                                      HasSubstr("tie_word_embeddings")));
}

TEST_F(T5ModelErrorsTest, MissingShard) {
  const std::string folder = Copy("t5_gated");
  const std::string shard = ShardOf(folder, "decoder.final_layer_norm.weight");
  fs::remove(folder + "/" + shard);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr(folder + "/model.safetensors.index.json"), HasSubstr(shard)));
}

TEST_F(T5ModelErrorsTest, IndexNamesTheWrongShard) {
  const std::string folder = Copy("t5_gated");
  const std::string tensor = "shared.weight";
  nlohmann::json index = ReadJson(folder + "/model.safetensors.index.json");
  std::string other;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (shard != index["weight_map"][tensor]) other = shard.get<std::string>();
  }
  ASSERT_FALSE(other.empty());
  index["weight_map"][tensor] = other;
  WriteJson(folder + "/model.safetensors.index.json", index);
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                      HasSubstr(tensor), HasSubstr(other)));
}

TEST_F(T5ModelErrorsTest, MalformedIndex) {
  const std::string folder = Copy("t5_gated");
  const std::string index = folder + "/model.safetensors.index.json";
  WriteFile(index, "{\"weight_map\": ");
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(index), HasSubstr("JSON")));
  WriteFile(index, "{\"metadata\": {}}");
  status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(index), HasSubstr("weight_map")));
}

TEST_F(T5ModelErrorsTest, NoWeights) {
  const std::string folder = Copy("t5_relu");
  fs::remove(folder + "/model.safetensors");
  absl::Status status = LoadStatus(folder);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(folder), HasSubstr("model.safetensors")));
}

TEST_F(T5ModelErrorsTest, UnsupportedDtypeOption) {
  T5LoadOptions options;
  options.dtype = at::kInt;
  absl::Status status = LoadStatus(TestData("t5_relu"), options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("dtype"));
}

TEST_F(T5ModelErrorsTest, BadInputsThrowClearErrorsOrReturnStatus) {
  absl::StatusOr<std::unique_ptr<T5Model>> loaded = T5Model::Load(TestData("t5_relu"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const T5Model& model = **loaded;
  const int64_t d = model.config().d_model;
  at::Tensor ids = at::full({2, 5}, 7, at::kLong);
  at::Tensor mask = at::ones({2, 5}, at::kLong);
  at::Tensor labels = at::full({2, 3}, 9, at::kLong);

  T5ForwardInputs good;
  good.inputs_embeds = model.Embed(ids);
  good.attention_mask = mask;
  good.decoder_inputs_embeds = model.Embed(model.ShiftRight(labels));
  good.labels = labels;
  EXPECT_TRUE(model.CheckForwardInputs(good).ok());

  T5ForwardInputs bad = good;
  bad.inputs_embeds = at::zeros({2, 5, d + 1});
  absl::Status status = model.CheckForwardInputs(bad);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("inputs_embeds"));
  EXPECT_THROW(model.Forward(bad), c10::Error);

  bad = good;
  bad.attention_mask = at::ones({2, 4});
  EXPECT_THAT(model.CheckForwardInputs(bad).message(), HasSubstr("attention_mask"));
  EXPECT_THROW(model.Forward(bad), c10::Error);

  bad = good;
  bad.labels = at::full({2, 3}, model.config().vocab_size, at::kLong);
  EXPECT_THAT(model.CheckForwardInputs(bad).message(), HasSubstr("labels"));

  bad = good;
  bad.decoder_inputs_embeds = model.Embed(model.ShiftRight(labels)).narrow(0, 0, 1);
  EXPECT_THAT(model.CheckForwardInputs(bad).message(), HasSubstr("batch"));
  EXPECT_THROW(model.Forward(bad), c10::Error);

  at::Tensor prompt = at::zeros({4, d});
  try {
    BuildPromptedInputs(model, prompt, /*num_virtual_tokens=*/3, /*submodules=*/1, ids, mask,
                        labels);
    ADD_FAILURE() << "a [4, d] prompt with 3 virtual tokens was accepted";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("prompt must be [3, "));
  }
  EXPECT_THROW(BuildPromptedInputs(model, at::zeros({3, d}), 3, 3, ids, mask, labels),
               c10::Error);
  EXPECT_THROW(BuildPromptedInputs(model, at::zeros({3, d}), 3, 1, at::full({2, 5}, -1, at::kLong),
                                   mask, labels),
               c10::Error);
  EXPECT_NO_THROW(BuildPromptedInputs(model, at::zeros({3, d}), 3, 1, ids, mask, labels));

  EXPECT_THROW(GreedyGenerate(model, good.inputs_embeds, at::ones({2, 4}), 3), c10::Error);
  EXPECT_THROW(GreedyGenerate(model, good.inputs_embeds, mask, -1), c10::Error);
  EXPECT_THROW(RankClassify(model, good.inputs_embeds, mask, at::zeros({3, 2, 2}, at::kLong)),
               c10::Error);
  EXPECT_THROW(model.Embed(at::full({1, 1}, model.config().vocab_size, at::kLong)), c10::Error);
}

TEST_F(T5ModelErrorsTest, SafetensorsRoundTrip) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/roundtrip.safetensors";
  std::map<std::string, at::Tensor> tensors = {
      {"f32", at::randn({3, 4})},
      {"f32_transposed", at::randn({4, 3}).t()},
      {"f16", at::randn({5}).to(at::kHalf)},
      {"bf16", at::randn({2, 2}).to(at::kBFloat16)},
      {"f64", at::randn({2}).to(at::kDouble)},
      {"i64", at::arange(6, at::kLong).view({2, 3})},
      {"i32", at::arange(4, at::kInt)},
      {"i8", at::arange(-2, 2, at::kChar)},
      {"u8", at::arange(3, at::kByte)},
      {"bool", at::arange(3, at::kLong).remainder(2) == 0},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::zeros({0, 3})},
  };
  ASSERT_TRUE(SaveSafetensors(path, tensors, {{"format", "pt"}}).ok());
  absl::StatusOr<std::map<std::string, at::Tensor>> loaded = LoadSafetensors(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor& back = loaded->at(name);
    EXPECT_EQ(back.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back, tensor)) << name;
  }

  absl::Status status = SaveSafetensors(path, {{"complex", at::zeros({2}, at::kComplexFloat)}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("complex")));
  status = SaveSafetensors(path, {{"undefined", at::Tensor()}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("undefined"));

  // The file written before the failed calls is still intact.
  EXPECT_TRUE(LoadSafetensors(path).ok());
  EXPECT_EQ(LoadSafetensors(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mpt
