#include "worker/training/checkpoint.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/quote.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/training/checkpoint_state.h"
#include "worker/model/torch_tensors.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kStateFile[] = "state.json";
constexpr char kPromptFile[] = "prompt.safetensors";
constexpr char kAdamWFile[] = "adamw.safetensors";
constexpr char kBestFile[] = "best.safetensors";

std::string PathIn(const std::string& dir, const char* file) {
  return (fs::path(dir) / file).string();
}

absl::Status Corrupt(const std::string& file, absl::string_view field, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(file, ": ", field, ": ", what));
}

std::string Shape(const at::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]"); }

json NumberJson(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// `got` must hold exactly `want`'s names, each with the same shape and dtype
// and only finite values.
absl::Status CheckTensors(const std::string& file, const std::map<std::string, at::Tensor>& got,
                          const std::map<std::string, at::Tensor>& want) {
  for (const auto& [name, w] : want) {
    auto it = got.find(name);
    if (it == got.end()) return Corrupt(file, QuoteForError(name), "tensor missing");
    const at::Tensor& t = it->second;
    if (t.sizes() != w.sizes()) {
      return Corrupt(file, QuoteForError(name),
                     absl::StrCat("shape ", Shape(t), " where ", Shape(w), " is expected"));
    }
    if (t.scalar_type() != w.scalar_type()) {
      return Corrupt(file, QuoteForError(name),
                     absl::StrCat("dtype ", c10::toString(t.scalar_type()), " where ",
                                  c10::toString(w.scalar_type()), " is expected"));
    }
    if (t.numel() > 0 && !at::isfinite(t).all().item<bool>()) {
      return Corrupt(file, QuoteForError(name), "holds NaN or infinite values");
    }
  }
  for (const auto& [name, t] : got) {
    if (want.count(name) == 0) return Corrupt(file, QuoteForError(name), "unexpected tensor");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensorFile(const std::string& file) {
  if (!fs::exists(file)) return Corrupt(file, "file", "missing");
  absl::StatusOr<std::map<std::string, at::Tensor>> loaded = LoadSafetensors(file);
  if (!loaded.ok()) return Corrupt(file, "file", loaded.status().message());
  return loaded;
}

std::string SlotName(size_t i, const char* what) { return absl::StrCat(i, ".", what); }

absl::StatusOr<CheckpointContents> ReadUnsafe(const std::string& dir,
                                              const CheckpointExpectations& expected) {
  const std::string state_file = PathIn(dir, kStateFile);
  absl::StatusOr<std::string> text = ReadFile(state_file);
  if (absl::IsNotFound(text.status())) return text.status();
  if (!text.ok()) return Corrupt(state_file, "file", text.status().message());
  CheckpointStateExpectations want_state;
  want_state.fingerprint = expected.fingerprint;
  want_state.total_steps = expected.total_steps;
  want_state.num_parameters = expected.parameters.size();
  ASSIGN_OR_RETURN(CheckpointState state, ParseCheckpointState(*text, state_file, want_state));
  CheckpointContents c;
  c.fingerprint = std::move(state.fingerprint);
  c.step = state.step;
  c.best_step = state.best_step;
  c.best_score = state.best_score;
  c.best_metrics = std::move(state.best_metrics);
  std::map<std::string, at::Tensor> want_moments;
  c.adamw.resize(expected.parameters.size());
  for (size_t i = 0; i < state.adamw_steps.size(); ++i) {
    const int64_t v = state.adamw_steps[i];
    c.adamw[i].step = v;
    if (v > 0) {
      want_moments[SlotName(i, "exp_avg")] = expected.parameters[i];
      want_moments[SlotName(i, "exp_avg_sq")] = expected.parameters[i];
    }
  }

  const std::string prompt_file = PathIn(dir, kPromptFile);
  ASSIGN_OR_RETURN(c.prompt, LoadTensorFile(prompt_file));
  RETURN_IF_ERROR(CheckTensors(prompt_file, c.prompt, expected.prompt));

  if (!want_moments.empty()) {
    const std::string adamw_file = PathIn(dir, kAdamWFile);
    ASSIGN_OR_RETURN(auto moments, LoadTensorFile(adamw_file));
    RETURN_IF_ERROR(CheckTensors(adamw_file, moments, want_moments));
    for (size_t i = 0; i < c.adamw.size(); ++i) {
      if (c.adamw[i].step == 0) continue;
      c.adamw[i].exp_avg = moments.at(SlotName(i, "exp_avg"));
      c.adamw[i].exp_avg_sq = moments.at(SlotName(i, "exp_avg_sq"));
      if (c.adamw[i].exp_avg_sq.numel() > 0 && c.adamw[i].exp_avg_sq.lt(0).any().item<bool>()) {
        return Corrupt(adamw_file, QuoteForError(SlotName(i, "exp_avg_sq")), "has negative values");
      }
    }
  } else if (fs::exists(PathIn(dir, kAdamWFile))) {
    return Corrupt(PathIn(dir, kAdamWFile), "file", "present although no parameter has a step");
  }

  const std::string best_file = PathIn(dir, kBestFile);
  if (fs::exists(best_file)) {
    ASSIGN_OR_RETURN(c.best, LoadTensorFile(best_file));
    RETURN_IF_ERROR(CheckTensors(best_file, c.best, expected.prompt));
  }
  return c;
}

}  // namespace

bool CheckpointExists(const std::string& dir) {
  std::error_code ec;
  return !dir.empty() && fs::exists(fs::path(dir) / kStateFile, ec);
}

absl::Status WriteCheckpoint(const std::string& dir, const CheckpointContents& c) {
  return ReplaceFolder(dir, [&](const std::string& tmp) -> absl::Status {
    RETURN_IF_ERROR(SaveSafetensors(PathIn(tmp, kPromptFile), c.prompt));
    if (!c.best.empty()) RETURN_IF_ERROR(SaveSafetensors(PathIn(tmp, kBestFile), c.best));
    std::map<std::string, at::Tensor> moments;
    json steps = json::array();
    for (size_t i = 0; i < c.adamw.size(); ++i) {
      const AdamWSlot& slot = c.adamw[i];
      const bool has = slot.step > 0 && slot.exp_avg.defined() && slot.exp_avg_sq.defined();
      steps.push_back(has ? slot.step : 0);
      if (!has) continue;
      moments[SlotName(i, "exp_avg")] = slot.exp_avg;
      moments[SlotName(i, "exp_avg_sq")] = slot.exp_avg_sq;
    }
    if (!moments.empty()) RETURN_IF_ERROR(SaveSafetensors(PathIn(tmp, kAdamWFile), moments));
    json metrics = json::array();
    for (const auto& [name, value] : c.best_metrics) metrics.push_back({name, NumberJson(value)});
    const json j = {{"format", kCheckpointFormat},
                    {"fingerprint", c.fingerprint},
                    {"step", c.step},
                    {"best_step", c.best_step},
                    {"best_score", NumberJson(c.best_score)},
                    {"best_metrics", metrics},
                    {"adamw_steps", steps}};
    return WriteFileAtomically(PathIn(tmp, kStateFile),
                               j.dump(2, ' ', false, json::error_handler_t::replace));
  });
}

absl::StatusOr<CheckpointContents> ReadCheckpoint(const std::string& dir,
                                                  const CheckpointExpectations& expected) {
  try {
    return ReadUnsafe(dir, expected);
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat(dir, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, ": ", e.what()));
  }
}

std::string SettingsFingerprint(absl::Span<const std::string> parts) {
  Sha256 hash;
  hash.Update(absl::string_view("mpt.checkpoint.settings.v2", sizeof("mpt.checkpoint.settings.v2")));
  for (const std::string& part : parts) {
    char length[8];
    uint64_t n = part.size();
    for (int b = 0; b < 8; ++b) length[b] = static_cast<char>((n >> (8 * b)) & 0xff);
    hash.Update(absl::string_view(length, sizeof(length)));
    hash.Update(part);
  }
  return hash.HexDigest();
}

}  // namespace mpt
