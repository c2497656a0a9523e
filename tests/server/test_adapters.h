// PEFT adapter archives for coordinator tests, built the way the worker
// writes them (worker/prompts/adapter_io.cc), and taken apart so that a
// test can spoil one piece.
#ifndef MPT_TESTS_SERVER_TEST_ADAPTERS_H_
#define MPT_TESTS_SERVER_TEST_ADAPTERS_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/artifact_pack.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/mpt/v1/service.pb.h"
#include "server/adapter_validation.h"
#include "tests/test_util.h"

namespace mpt::testing {

struct FakeTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;  // little-endian
};

// The two files of an adapter folder, before packing.
struct AdapterFiles {
  nlohmann::json config;
  std::vector<FakeTensor> tensors;
  // Written verbatim instead of `config` when not empty.
  std::string raw_config;
  // Files left out of the folder.
  bool without_config = false;
  bool without_weights = false;
};

// `n` F32 values 0.01, 0.02, ...
inline std::string F32Values(int64_t n) {
  std::string out(static_cast<size_t>(n) * sizeof(float), '\0');
  for (int64_t i = 0; i < n; ++i) {
    const float v = 0.01f * static_cast<float>(i + 1);
    std::memcpy(&out[static_cast<size_t>(i) * sizeof(float)], &v, sizeof(v));
  }
  return out;
}

inline FakeTensor F32Tensor(const std::string& name, std::vector<int64_t> shape) {
  return FakeTensor{name, DType::kF32, shape, F32Values(NumElements(shape))};
}

// The adapter `e` asks for, with token_dim `d` (and rank e.num_ranks, or 2
// when that is 0 = any).
inline AdapterFiles ValidAdapterFiles(const ExpectedAdapter& e, int64_t d = 8) {
  AdapterFiles f;
  const int64_t rows = int64_t{e.num_virtual_tokens} * e.num_transformer_submodules;
  const int64_t r = e.num_ranks > 0 ? e.num_ranks : 2;
  f.config = {
      {"peft_type", e.multitask ? "MULTITASK_PROMPT_TUNING" : "PROMPT_TUNING"},
      {"task_type", "SEQ_2_SEQ_LM"},
      {"base_model_name_or_path", "/models/t5"},
      {"inference_mode", true},
      {"num_virtual_tokens", e.num_virtual_tokens},
      {"token_dim", d},
      {"num_transformer_submodules", e.num_transformer_submodules},
      {"num_attention_heads", 4},
      {"num_layers", 2},
      {"prompt_tuning_init", "RANDOM"},
  };
  f.tensors.push_back(F32Tensor("prompt_embeddings", {rows, d}));
  if (e.multitask) {
    f.config["num_tasks"] = e.num_tasks;
    f.config["num_ranks"] = r;
    f.config["prompt_tuning_init_task"] = 0;
    f.tensors.push_back(F32Tensor("prefix_task_cols", {e.num_tasks, rows, r}));
    f.tensors.push_back(F32Tensor("prefix_task_rows", {e.num_tasks, r, d}));
  }
  return f;
}

// The folder packed as the worker uploads it; "" (and a test failure) when
// it cannot be written.
inline std::string PackAdapter(const AdapterFiles& f) {
  static std::atomic<int> counter{0};
  const std::string dir = FreshTempDir(absl::StrCat("adapter_", counter++));
  if (!f.without_config) {
    const std::string text = f.raw_config.empty() ? f.config.dump() : f.raw_config;
    absl::Status s = WriteFileAtomically(dir + "/adapter_config.json", text);
    EXPECT_TRUE(s.ok()) << s;
  }
  if (!f.without_weights) {
    std::vector<TensorToWrite> tensors;
    for (const FakeTensor& t : f.tensors) {
      tensors.push_back(TensorToWrite{
          t.name, t.dtype, t.shape,
          absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.bytes.data()),
                                    t.bytes.size())});
    }
    absl::Status s = WriteSafetensors(dir + "/adapter_model.safetensors", tensors);
    EXPECT_TRUE(s.ok()) << s;
  }
  absl::StatusOr<std::string> blob = PackFolder(dir);
  EXPECT_TRUE(blob.ok()) << blob.status();
  return blob.ok() ? *blob : "";
}

// A valid adapter for the stage of `a` (its job's spec travels with it).
inline std::string AdapterBlobFor(const mpt::v1::Assignment& a) {
  absl::StatusOr<ExpectedAdapter> e =
      ExpectedAdapterFor(a.spec(), mpt::v1::PIPELINE, a.stage_kind());
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return "";
  return PackAdapter(ValidAdapterFiles(*e));
}

}  // namespace mpt::testing

#endif  // MPT_TESTS_SERVER_TEST_ADAPTERS_H_
