#include "worker/training/checkpoint.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "gtest/gtest.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string TempDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  fs::path p = fs::path(root ? root : "/tmp") / "checkpoint_test" / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p.string();
}

constexpr int64_t kTotalSteps = 20;

CheckpointExpectations Expected() {
  CheckpointExpectations e;
  e.fingerprint = SettingsFingerprint({"stage", "settings"});
  e.total_steps = kTotalSteps;
  e.prompt["prompt_embeddings"] = at::zeros({3, 2});
  e.prompt["prefix_task_cols"] = at::zeros({2, 3, 1});
  e.parameters = {at::zeros({3, 2}), at::zeros({2, 3, 1})};
  return e;
}

CheckpointContents Contents() {
  at::manual_seed(7);
  CheckpointContents c;
  c.fingerprint = Expected().fingerprint;
  c.step = 8;
  c.prompt["prompt_embeddings"] = at::randn({3, 2});
  c.prompt["prefix_task_cols"] = at::randn({2, 3, 1});
  c.adamw.resize(2);
  c.adamw[0] = {8, at::randn({3, 2}), at::rand({3, 2})};
  c.adamw[1] = {7, at::randn({2, 3, 1}), at::rand({2, 3, 1})};
  c.best_score = 0.75;
  c.best_step = 4;
  c.best_metrics = {{"accuracy", 0.75}, {"f1", NAN}};
  c.best["prompt_embeddings"] = at::randn({3, 2});
  c.best["prefix_task_cols"] = at::randn({2, 3, 1});
  return c;
}

bool SameBits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && at::equal(a, b);
}

TEST(Checkpoint, RoundTripsEveryFieldExactly) {
  const std::string dir = TempDir("round_trip");
  EXPECT_FALSE(CheckpointExists(dir));
  const CheckpointContents written = Contents();
  ASSERT_TRUE(WriteCheckpoint(dir, written).ok());
  EXPECT_TRUE(CheckpointExists(dir));
  absl::StatusOr<CheckpointContents> read = ReadCheckpoint(dir, Expected());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->fingerprint, written.fingerprint);
  EXPECT_EQ(read->step, 8);
  EXPECT_EQ(read->best_step, 4);
  EXPECT_EQ(read->best_score, 0.75);
  ASSERT_EQ(read->best_metrics.size(), 2u);
  EXPECT_EQ(read->best_metrics[0], written.best_metrics[0]);
  EXPECT_EQ(read->best_metrics[1].first, "f1");
  EXPECT_TRUE(std::isnan(read->best_metrics[1].second));
  for (const auto& [name, t] : written.prompt) EXPECT_TRUE(SameBits(read->prompt.at(name), t)) << name;
  for (const auto& [name, t] : written.best) EXPECT_TRUE(SameBits(read->best.at(name), t)) << name;
  ASSERT_EQ(read->adamw.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(read->adamw[i].step, written.adamw[i].step);
    EXPECT_TRUE(SameBits(read->adamw[i].exp_avg, written.adamw[i].exp_avg));
    EXPECT_TRUE(SameBits(read->adamw[i].exp_avg_sq, written.adamw[i].exp_avg_sq));
  }
}

TEST(Checkpoint, BeforeAnyUpdateAndWithoutBestPrompt) {
  const std::string dir = TempDir("fresh");
  CheckpointContents c = Contents();
  c.step = 0;
  c.adamw = {AdamWSlot{}, AdamWSlot{}};
  c.best.clear();
  c.best_step = -1;
  c.best_score = -INFINITY;
  c.best_metrics.clear();
  ASSERT_TRUE(WriteCheckpoint(dir, c).ok());
  EXPECT_FALSE(fs::exists(fs::path(dir) / "adamw.safetensors"));
  auto read = ReadCheckpoint(dir, Expected());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->step, 0);
  EXPECT_EQ(read->best_score, -INFINITY);
  EXPECT_TRUE(read->best.empty());
  EXPECT_FALSE(read->adamw[0].exp_avg.defined());
}

TEST(Checkpoint, MissingFolderIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(ReadCheckpoint(TempDir("none"), Expected()).status()));
}

TEST(Checkpoint, OtherSettingsOrOlderFormatAreNotResumed) {
  const std::string dir = TempDir("other");
  ASSERT_TRUE(WriteCheckpoint(dir, Contents()).ok());
  CheckpointExpectations other = Expected();
  other.fingerprint = SettingsFingerprint({"stage", "other settings"});
  EXPECT_TRUE(absl::IsFailedPrecondition(ReadCheckpoint(dir, other).status()));

  // What the previous trainer wrote: no format, a 16-digit std::hash value.
  const std::string old = TempDir("format1");
  fs::create_directories(old);
  ASSERT_TRUE(WriteFileAtomically(old + "/state.json",
                                  R"({"fingerprint": "00ab12cd34ef5678", "step": 4})")
                  .ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(ReadCheckpoint(old, Expected()).status()));
}

// Writes a valid checkpoint, applies `edit` to its state.json and reads it.
absl::Status ReadWithState(const std::string& name, const std::function<void(json&)>& edit) {
  const std::string dir = TempDir(name);
  EXPECT_TRUE(WriteCheckpoint(dir, Contents()).ok());
  const std::string path = dir + "/state.json";
  json j = json::parse(*ReadFile(path));
  edit(j);
  EXPECT_TRUE(WriteFileAtomically(path, j.dump()).ok());
  return ReadCheckpoint(dir, Expected()).status();
}

void ExpectDataLoss(const absl::Status& s, const std::string& file, const std::string& field) {
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_NE(s.message().find(file), std::string::npos) << s;
  EXPECT_NE(s.message().find(field), std::string::npos) << s;
}

TEST(Checkpoint, StateFieldsAreTypeAndRangeChecked) {
  ExpectDataLoss(ReadWithState("neg_step", [](json& j) { j["step"] = -1; }), "state.json", "step");
  ExpectDataLoss(ReadWithState("late_step", [](json& j) { j["step"] = kTotalSteps + 1; }),
                 "state.json", "step");
  ExpectDataLoss(ReadWithState("str_step", [](json& j) { j["step"] = "8"; }), "state.json",
                 "step");
  ExpectDataLoss(ReadWithState("float_step", [](json& j) { j["step"] = 8.5; }), "state.json",
                 "step");
  ExpectDataLoss(ReadWithState("huge_step", [](json& j) { j["step"] = UINT64_MAX; }),
                 "state.json", "step");
  ExpectDataLoss(ReadWithState("no_step", [](json& j) { j.erase("step"); }), "state.json",
                 "step");
  ExpectDataLoss(ReadWithState("best_step", [](json& j) { j["best_step"] = 9; }), "state.json",
                 "best_step");
  ExpectDataLoss(ReadWithState("best_score", [](json& j) { j["best_score"] = "high"; }),
                 "state.json", "best_score");
  ExpectDataLoss(ReadWithState("metrics", [](json& j) { j["best_metrics"] = json::array({json::array({"a", "b"})}); }),
                 "state.json", "best_metrics[0]");
  ExpectDataLoss(ReadWithState("metrics_obj", [](json& j) { j["best_metrics"] = json::object(); }),
                 "state.json", "best_metrics");
  ExpectDataLoss(ReadWithState("fp_type", [](json& j) { j["fingerprint"] = 5; }), "state.json",
                 "fingerprint");
  ExpectDataLoss(ReadWithState("adam_len", [](json& j) { j["adamw_steps"] = {8}; }),
                 "state.json", "adamw_steps");
  ExpectDataLoss(ReadWithState("adam_neg", [](json& j) { j["adamw_steps"] = {8, -2}; }),
                 "state.json", "adamw_steps[1]");
  ExpectDataLoss(ReadWithState("adam_late", [](json& j) { j["adamw_steps"] = {9, 7}; }),
                 "state.json", "adamw_steps[0]");
  ExpectDataLoss(ReadWithState("adam_bool", [](json& j) { j["adamw_steps"] = {true, 7}; }),
                 "state.json", "adamw_steps[0]");
}

TEST(Checkpoint, UnparsableStateIsDataLoss) {
  for (const char* text : {"{\"format\": 2, \"step\":", "[1, 2]", "\xff\xfe", ""}) {
    const std::string dir = TempDir("garbage");
    ASSERT_TRUE(WriteCheckpoint(dir, Contents()).ok());
    ASSERT_TRUE(WriteFileAtomically(dir + "/state.json", text).ok());
    ExpectDataLoss(ReadCheckpoint(dir, Expected()).status(), "state.json", "file");
  }
}

// Writes a valid checkpoint, replaces one tensor of `file` and reads it.
absl::Status ReadWithTensor(const std::string& name, const std::string& file,
                            const std::string& tensor, const at::Tensor& value) {
  const std::string dir = TempDir(name);
  EXPECT_TRUE(WriteCheckpoint(dir, Contents()).ok());
  auto tensors = LoadSafetensors(dir + "/" + file);
  EXPECT_TRUE(tensors.ok());
  (*tensors)[tensor] = value;
  EXPECT_TRUE(SaveSafetensors(dir + "/" + file, *tensors).ok());
  return ReadCheckpoint(dir, Expected()).status();
}

TEST(Checkpoint, TensorsAreCheckedForShapeDtypeAndValues) {
  const std::string p = "prompt.safetensors";
  ExpectDataLoss(ReadWithTensor("shape", p, "prompt_embeddings", at::zeros({2, 3})), p,
                 "prompt_embeddings");
  ExpectDataLoss(ReadWithTensor("dtype", p, "prompt_embeddings", at::zeros({3, 2}, at::kDouble)),
                 p, "prompt_embeddings");
  ExpectDataLoss(ReadWithTensor("nan", p, "prefix_task_cols", at::full({2, 3, 1}, NAN)), p,
                 "prefix_task_cols");
  ExpectDataLoss(ReadWithTensor("extra", p, "stray", at::zeros({1})), p, "stray");
  const std::string a = "adamw.safetensors";
  ExpectDataLoss(ReadWithTensor("adam_inf", a, "1.exp_avg", at::full({2, 3, 1}, INFINITY)), a,
                 "1.exp_avg");
  ExpectDataLoss(ReadWithTensor("adam_neg", a, "0.exp_avg_sq", -at::ones({3, 2})), a,
                 "0.exp_avg_sq");
  const std::string b = "best.safetensors";
  ExpectDataLoss(ReadWithTensor("best_shape", b, "prompt_embeddings", at::zeros({3})), b,
                 "prompt_embeddings");
}

TEST(Checkpoint, MissingOrTruncatedTensorFilesAreDataLoss) {
  const std::string dir = TempDir("missing");
  ASSERT_TRUE(WriteCheckpoint(dir, Contents()).ok());
  fs::remove(dir + "/adamw.safetensors");
  ExpectDataLoss(ReadCheckpoint(dir, Expected()).status(), "adamw.safetensors", "missing");

  const std::string cut = TempDir("truncated");
  ASSERT_TRUE(WriteCheckpoint(cut, Contents()).ok());
  std::string bytes = *ReadFile(cut + "/prompt.safetensors");
  ASSERT_TRUE(WriteFileAtomically(cut + "/prompt.safetensors", bytes.substr(0, bytes.size() - 5)).ok());
  ExpectDataLoss(ReadCheckpoint(cut, Expected()).status(), "prompt.safetensors", "file");
}

TEST(SettingsFingerprint, IsAStableSha256OfTheLengthPrefixedParts) {
  const std::string fp = SettingsFingerprint({"source", "abc"});
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp, SettingsFingerprint({"source", "abc"}));
  EXPECT_NE(fp, SettingsFingerprint({"sourc", "eabc"})) << "part boundaries count";
  EXPECT_NE(fp, SettingsFingerprint({"source", "abc", ""}));
  // Pinned (computed independently: SHA-256 of the tag with its NUL, then
  // each part's length as 8 little-endian bytes and its bytes): the value
  // must not change between builds or machines.
  EXPECT_EQ(SettingsFingerprint({}),
            "caa133cf68ec2bf8ed349dc2e48727c15914aebdd43c4f491b34148e569f6358");
  EXPECT_EQ(fp, "9bc254b540f2b9028fd228e682ad8837982b5beb5675f7b0f368abb881994b97");
}

}  // namespace
}  // namespace mpt
