#include "server/adapter_validation.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/server/test_adapters.h"

namespace mpt {
namespace {

using ::mpt::testing::AdapterFiles;
using ::mpt::testing::F32Tensor;
using ::mpt::testing::PackAdapter;
using ::mpt::testing::ValidAdapterFiles;

ExpectedAdapter Source() {
  ExpectedAdapter e;
  e.multitask = false;
  e.num_virtual_tokens = 5;
  e.num_transformer_submodules = 2;
  return e;
}

ExpectedAdapter Multitask() {
  ExpectedAdapter e;
  e.multitask = true;
  e.num_virtual_tokens = 4;
  e.num_transformer_submodules = 1;
  e.num_tasks = 3;
  e.num_ranks = 2;
  return e;
}

absl::Status Check(const AdapterFiles& f, const ExpectedAdapter& e) {
  return ValidateAdapterArtifact(PackAdapter(f), e, "jobs/j stage s");
}

// INVALID_ARGUMENT naming the artefact and containing `needle`.
void ExpectRejected(const absl::Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StartsWith(s.message(), "jobs/j stage s: ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), needle)) << s << " lacks " << needle;
}

TEST(AdapterValidationTest, AcceptsBothKindsAsTheWorkerWritesThem) {
  EXPECT_TRUE(Check(ValidAdapterFiles(Source()), Source()).ok());
  EXPECT_TRUE(Check(ValidAdapterFiles(Multitask()), Multitask()).ok());
  // PEFT leaves token_dim null; d then comes from the tensors.
  AdapterFiles f = ValidAdapterFiles(Multitask(), 6);
  f.config["token_dim"] = nullptr;
  EXPECT_TRUE(Check(f, Multitask()).ok());
  // Any rank when the expectation does not fix one (target of an external adapter).
  ExpectedAdapter any = Multitask();
  any.num_ranks = 0;
  EXPECT_TRUE(Check(ValidAdapterFiles(Multitask()), any).ok());
  // A decoder-only worker's: CAUSAL_LM, one submodule (PEFT's default for
  // it when the key is absent).
  f = ValidAdapterFiles(Multitask());
  f.config["task_type"] = "CAUSAL_LM";
  EXPECT_TRUE(Check(f, Multitask()).ok());
  f.config.erase("num_transformer_submodules");
  EXPECT_TRUE(Check(f, Multitask()).ok());
}

TEST(AdapterValidationTest, RejectsWhatIsNotAnAdapterArchive) {
  ExpectRejected(ValidateAdapterArtifact("adapter of jobs/x", Source(), "jobs/j stage s"),
                 "archive");
  ExpectRejected(ValidateAdapterArtifact("", Source(), "jobs/j stage s"), "archive");
  AdapterFiles f = ValidAdapterFiles(Source());
  f.without_weights = true;
  ExpectRejected(Check(f, Source()), "adapter_model.safetensors");
  f = ValidAdapterFiles(Source());
  f.without_config = true;
  ExpectRejected(Check(f, Source()), "adapter_config.json");
}

TEST(AdapterValidationTest, RejectsABadConfig) {
  AdapterFiles f = ValidAdapterFiles(Source());
  f.raw_config = "{\"peft_type\": ";
  ExpectRejected(Check(f, Source()), "adapter_config.json");
  f.raw_config = "[1, 2]";
  ExpectRejected(Check(f, Source()), "not a JSON object");
  f.raw_config = std::string(100, '[') + std::string(100, ']');
  ExpectRejected(Check(f, Source()), "adapter_config.json");

  // The kind each stage produces.
  ExpectRejected(Check(ValidAdapterFiles(Multitask()), Source()), "peft_type");
  ExpectRejected(Check(ValidAdapterFiles(Source()), Multitask()), "peft_type");
  f = ValidAdapterFiles(Source());
  f.config["peft_type"] = "LORA";
  ExpectRejected(Check(f, Source()), "peft_type");
  f = ValidAdapterFiles(Source());
  f.config.erase("peft_type");
  ExpectRejected(Check(f, Source()), "peft_type");
  f = ValidAdapterFiles(Source());
  f.config["task_type"] = "SEQ_CLS";
  ExpectRejected(Check(f, Source()), "task_type");
  // A decoder-only worker's adapter has one submodule.
  f = ValidAdapterFiles(Source());
  f.config["task_type"] = "CAUSAL_LM";
  ExpectRejected(Check(f, Source()), "num_transformer_submodules is 2, a CAUSAL_LM adapter has 1");

  // Numbers against the job's spec.
  f = ValidAdapterFiles(Source());
  f.config["num_virtual_tokens"] = 6;
  ExpectRejected(Check(f, Source()), "num_virtual_tokens is 6");
  f = ValidAdapterFiles(Source());
  f.config["num_virtual_tokens"] = 4294967301.0;  // 2^32 + 5: no wrap-around
  ExpectRejected(Check(f, Source()), "num_virtual_tokens");
  f = ValidAdapterFiles(Source());
  f.config["num_transformer_submodules"] = 1;
  ExpectRejected(Check(f, Source()), "num_transformer_submodules is 1");
  f = ValidAdapterFiles(Multitask());
  f.config["num_tasks"] = 2;
  ExpectRejected(Check(f, Multitask()), "num_tasks is 2");
  f = ValidAdapterFiles(Multitask());
  f.config["num_ranks"] = 1;
  ExpectRejected(Check(f, Multitask()), "num_ranks is 1");
}

TEST(AdapterValidationTest, RejectsWrongTensors) {
  // Missing.
  AdapterFiles f = ValidAdapterFiles(Multitask());
  f.tensors.pop_back();
  ExpectRejected(Check(f, Multitask()), "\"prefix_task_rows\" is missing");
  f = ValidAdapterFiles(Source());
  f.tensors[0].name = "embedding.weight";
  ExpectRejected(Check(f, Source()), "\"prompt_embeddings\" is missing");
  // Extra.
  f = ValidAdapterFiles(Source());
  f.tensors.push_back(F32Tensor("lora_A", {2, 2}));
  ExpectRejected(Check(f, Source()), "unexpected tensor \"lora_A\"");
  // Dtype.
  f = ValidAdapterFiles(Source());
  f.tensors[0].dtype = DType::kI32;
  ExpectRejected(Check(f, Source()), "dtype I32");
  // Shapes: T = 5 x 2 rows.
  f = ValidAdapterFiles(Source());
  f.tensors[0] = F32Tensor("prompt_embeddings", {5, 8});
  ExpectRejected(Check(f, Source()), "shape [5, 8], expected [10, 8]");
  f = ValidAdapterFiles(Multitask());
  f.tensors[1] = F32Tensor("prefix_task_cols", {3, 4, 3});
  ExpectRejected(Check(f, Multitask()), "prefix_task_cols");
  // d must agree with token_dim and across tensors.
  f = ValidAdapterFiles(Multitask(), 8);
  f.config["token_dim"] = 16;
  ExpectRejected(Check(f, Multitask()), "expected [4, 16]");
  f = ValidAdapterFiles(Multitask(), 8);
  f.config["token_dim"] = nullptr;
  f.tensors[2] = F32Tensor("prefix_task_rows", {3, 2, 7});
  ExpectRejected(Check(f, Multitask()), "prefix_task_rows");
}

TEST(AdapterValidationTest, RejectsNonFiniteValues) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    AdapterFiles f = ValidAdapterFiles(Multitask());
    std::memcpy(&f.tensors[1].bytes[12], &bad, sizeof(bad));
    ExpectRejected(Check(f, Multitask()), "\"prefix_task_cols\" holds NaN or infinite values");
  }
}

TEST(AdapterValidationTest, ExpectationFollowsTheStage) {
  mpt::v1::PipelineSpec spec;
  spec.mutable_prompt()->set_num_virtual_tokens(7);
  spec.mutable_prompt()->set_num_transformer_submodules(2);
  spec.mutable_prompt()->set_num_ranks(3);
  for (const char* t : {"a", "b"}) spec.mutable_distillation()->add_tasks()->set_name(t);
  for (const char* t : {"x", "y", "z"}) spec.mutable_target()->add_tasks()->set_name(t);

  auto source = ExpectedAdapterFor(spec, mpt::v1::PIPELINE, mpt::v1::SOURCE_TRAINING);
  ASSERT_TRUE(source.ok());
  EXPECT_FALSE(source->multitask);
  EXPECT_EQ(source->num_virtual_tokens, 7);
  EXPECT_EQ(source->num_transformer_submodules, 2);

  auto distill = ExpectedAdapterFor(spec, mpt::v1::PIPELINE, mpt::v1::DISTILLATION);
  ASSERT_TRUE(distill.ok());
  EXPECT_TRUE(distill->multitask);
  EXPECT_EQ(distill->num_tasks, 2);
  EXPECT_EQ(distill->num_ranks, 3);

  auto target = ExpectedAdapterFor(spec, mpt::v1::PIPELINE, mpt::v1::TARGET_ADAPTATION);
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(target->num_tasks, 1);
  EXPECT_EQ(target->num_ranks, 3);
  spec.mutable_target()->set_shared(true);
  target = ExpectedAdapterFor(spec, mpt::v1::TARGET_ADAPTATION, mpt::v1::TARGET_ADAPTATION);
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(target->num_tasks, 3);
  EXPECT_EQ(target->num_ranks, 0);  // the source adapter's, unknown here

  EXPECT_EQ(ExpectedAdapterFor(spec, mpt::v1::PIPELINE, mpt::v1::PIPELINE).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mpt
