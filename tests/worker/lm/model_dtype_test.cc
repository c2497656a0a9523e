// --dtype=auto: which dtype a model folder loads in (ModelDtypeFor), and
// the flag's parsing (ApplyModelDtypeFlag).
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "worker/lm/base_model_loader.h"

namespace mpt {
namespace {

using ::mpt::testing::FreshTempDir;
using ::mpt::testing::WriteFile;

const char kLlamaConfig[] =
    R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300%s})";

std::string Folder(const std::string& name, const std::string& config) {
  const std::string dir = FreshTempDir(name);
  WriteFile(dir + "/config.json", config);
  return dir;
}

std::string LlamaFolder(const std::string& name, const std::string& dtype_field) {
  std::string config = kLlamaConfig;
  config.replace(config.find("%s"), 2, dtype_field);
  return Folder(name, config);
}

c10::ScalarType Auto(const std::string& folder, c10::Device device) {
  BaseModelOptions options;
  options.device = device;
  EXPECT_TRUE(ApplyModelDtypeFlag("auto", &options).ok());
  absl::StatusOr<c10::ScalarType> dtype = ModelDtypeFor(folder, options);
  EXPECT_TRUE(dtype.ok()) << dtype.status();
  return dtype.ok() ? *dtype : c10::ScalarType::Undefined;
}

const c10::Device kCpu(c10::DeviceType::CPU);
const c10::Device kCuda(c10::DeviceType::CUDA, 0);

TEST(ModelDtypeTest, AutoKeepsStoredBfloat16OnEveryDevice) {
  const std::string bf16 = LlamaFolder("bf16", R"(, "torch_dtype": "bfloat16")");
  EXPECT_EQ(Auto(bf16, kCpu), c10::ScalarType::BFloat16);
  EXPECT_EQ(Auto(bf16, kCuda), c10::ScalarType::BFloat16);
  // transformers 5 writes "dtype" instead of "torch_dtype".
  const std::string bf16_new = LlamaFolder("bf16_new", R"(, "dtype": "bfloat16")");
  EXPECT_EQ(Auto(bf16_new, kCpu), c10::ScalarType::BFloat16);
}

TEST(ModelDtypeTest, AutoKeepsFloat16OnCudaOnly) {
  const std::string f16 = LlamaFolder("f16", R"(, "torch_dtype": "float16")");
  EXPECT_EQ(Auto(f16, kCuda), c10::ScalarType::Half);
  EXPECT_EQ(Auto(f16, kCpu), c10::ScalarType::Float);
}

TEST(ModelDtypeTest, AutoIsFloat32OtherwiseAndForT5) {
  EXPECT_EQ(Auto(LlamaFolder("f32", R"(, "torch_dtype": "float32")"), kCpu),
            c10::ScalarType::Float);
  EXPECT_EQ(Auto(LlamaFolder("none", ""), kCpu), c10::ScalarType::Float);
  const std::string t5 = Folder("t5", R"({"model_type": "t5", "torch_dtype": "bfloat16"})");
  EXPECT_EQ(Auto(t5, kCpu), c10::ScalarType::Float);
  EXPECT_EQ(Auto(t5, kCuda), c10::ScalarType::Float);
}

TEST(ModelDtypeTest, AFixedDtypeIsUsedWhateverTheFolderSays) {
  BaseModelOptions options;
  ASSERT_TRUE(ApplyModelDtypeFlag("float32", &options).ok());
  EXPECT_FALSE(options.auto_dtype);
  const std::string bf16 = LlamaFolder("fixed", R"(, "torch_dtype": "bfloat16")");
  absl::StatusOr<c10::ScalarType> dtype = ModelDtypeFor(bf16, options);
  ASSERT_TRUE(dtype.ok()) << dtype.status();
  EXPECT_EQ(*dtype, c10::ScalarType::Float);
  ASSERT_TRUE(ApplyModelDtypeFlag("bfloat16", &options).ok());
  EXPECT_EQ(options.dtype, c10::ScalarType::BFloat16);
  // A fixed dtype needs no readable folder.
  EXPECT_TRUE(ModelDtypeFor("/nonexistent", options).ok());
}

TEST(ModelDtypeTest, BadFlagsAndFoldersAreErrorsThatSayWhat) {
  BaseModelOptions options;
  absl::Status bad = ApplyModelDtypeFlag("fp8", &options, "--dtype");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--dtype"), std::string::npos) << bad;
  EXPECT_NE(bad.message().find("auto"), std::string::npos) << bad;

  ASSERT_TRUE(ApplyModelDtypeFlag("auto", &options).ok());
  absl::StatusOr<c10::ScalarType> missing = ModelDtypeFor("/nonexistent/folder", options);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/folder"), std::string::npos)
      << missing.status();
  const std::string unknown = Folder("unknown", R"({"model_type": "gpt_neox"})");
  absl::StatusOr<c10::ScalarType> kind = ModelDtypeFor(unknown, options);
  EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kind.status().message().find("model_type"), std::string::npos) << kind.status();
}

}  // namespace
}  // namespace mpt
