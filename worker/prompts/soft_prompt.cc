#include "worker/prompts/soft_prompt.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

std::string ShapeString(std::initializer_list<int64_t> s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

absl::Status CheckShape(const char* name, const at::Tensor& t,
                        std::initializer_list<int64_t> want) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
  if (t.sizes() != at::IntArrayRef(want)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": shape ", ShapeString(t), " does not fit the prompt, expected ",
        ShapeString(want)));
  }
  return absl::OkStatus();
}

at::Tensor Param(const at::Tensor& t) {
  return t.detach().to(at::kFloat).contiguous().clone().set_requires_grad(true);
}

// U, V ~ N(0, 0.02), as PEFT initialises the task factors.
std::pair<at::Tensor, at::Tensor> RandomFactors(const SoftPromptConfig& c,
                                                at::Generator& gen) {
  auto cols = at::normal(0.0, 0.02, {c.num_tasks, c.total_tokens(), c.num_ranks}, gen);
  auto rows = at::normal(0.0, 0.02, {c.num_tasks, c.num_ranks, c.token_dim}, gen);
  return {cols, rows};
}

absl::StatusOr<SoftPrompt> WithRandomFactors(const SoftPromptConfig& config,
                                             const at::Tensor& embeddings,
                                             at::Generator& gen) {
  if (config.kind == PromptKind::kPromptTuning) {
    return SoftPrompt::FromTensors(config, embeddings);
  }
  auto [cols, rows] = RandomFactors(config, gen);
  return SoftPrompt::FromTensors(config, embeddings, cols, rows);
}

// Rows `index` of the table as the model's embedding layer gives them
// (times `embed_scale` when defined, in the table's dtype), in fp32.
at::Tensor EmbeddingRows(const at::Tensor& word_embeddings, const at::Tensor& index,
                         const at::Tensor& embed_scale) {
  at::Tensor rows = word_embeddings.detach().index_select(0, index.to(word_embeddings.device()));
  if (embed_scale.defined()) rows = rows * embed_scale;
  return rows.to(at::kFloat);
}

absl::Status CheckWordEmbeddings(const SoftPromptConfig& config,
                                 const at::Tensor& word_embeddings) {
  if (!word_embeddings.defined() || word_embeddings.dim() != 2 ||
      word_embeddings.size(1) != config.token_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token_dim: the prompt has ", config.token_dim,
        " features but the model's word embeddings are ",
        word_embeddings.defined() ? ShapeString(word_embeddings) : "missing"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view PromptKindName(PromptKind kind) {
  return kind == PromptKind::kMultitask ? "MULTITASK_PROMPT_TUNING" : "PROMPT_TUNING";
}

absl::StatusOr<PromptKind> ParsePromptKind(absl::string_view name) {
  if (name == "PROMPT_TUNING") return PromptKind::kPromptTuning;
  if (name == "MULTITASK_PROMPT_TUNING") return PromptKind::kMultitask;
  return absl::InvalidArgumentError(absl::StrCat(
      "peft_type: \"", name,
      "\" is not supported (expected PROMPT_TUNING or MULTITASK_PROMPT_TUNING)"));
}

absl::string_view PromptInitName(PromptInit init) {
  switch (init) {
    case PromptInit::kRandom: return "RANDOM";
    case PromptInit::kText: return "TEXT";
    case PromptInit::kSampleVocab: return "SAMPLE_VOCAB";
    case PromptInit::kAverageSourceTasks: return "AVERAGE_SOURCE_TASKS";
    case PromptInit::kExactSourceTask: return "EXACT_SOURCE_TASK";
    case PromptInit::kOnlySourceShared: return "ONLY_SOURCE_SHARED";
    case PromptInit::kTeacherMean: return "TEACHER_MEAN";
  }
  return "?";
}

absl::StatusOr<PromptInit> ParsePromptInit(absl::string_view name) {
  for (PromptInit init :
       {PromptInit::kRandom, PromptInit::kText, PromptInit::kSampleVocab,
        PromptInit::kAverageSourceTasks, PromptInit::kExactSourceTask,
        PromptInit::kOnlySourceShared, PromptInit::kTeacherMean}) {
    if (name == PromptInitName(init)) return init;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "prompt_tuning_init: unknown value \"", name,
      "\" (expected RANDOM, TEXT, SAMPLE_VOCAB, AVERAGE_SOURCE_TASKS, "
      "EXACT_SOURCE_TASK, ONLY_SOURCE_SHARED or TEACHER_MEAN)"));
}

absl::Status ValidateSoftPromptConfig(const SoftPromptConfig& c) {
  if (c.num_virtual_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_virtual_tokens: must be positive, got ", c.num_virtual_tokens));
  }
  if (c.num_transformer_submodules != 1 && c.num_transformer_submodules != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_transformer_submodules: must be 1 or 2, got ",
                     c.num_transformer_submodules));
  }
  if (c.token_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_dim: must be positive, got ", c.token_dim));
  }
  if (c.kind == PromptKind::kMultitask) {
    if (c.num_tasks <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_tasks: must be positive, got ", c.num_tasks));
    }
    // Any positive rank: PEFT's MultitaskPromptTuningConfig allows a rank
    // above the prompt's sides (the factors' product is then of full rank),
    // and its files are read as written. Specs keep ranks within the prompt
    // (common/spec/spec_loader.cc); readers bound it (kMaxAdapterRanks).
    if (c.num_ranks <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_ranks: must be positive, got ", c.num_ranks));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SoftPrompt> SoftPrompt::FromTensors(const SoftPromptConfig& config,
                                                   const at::Tensor& prompt_embeddings,
                                                   const at::Tensor& prefix_task_cols,
                                                   const at::Tensor& prefix_task_rows) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  const int64_t t = config.total_tokens(), d = config.token_dim;
  RETURN_IF_ERROR(CheckShape("prompt_embeddings", prompt_embeddings, {t, d}));
  SoftPrompt p;
  p.config_ = config;
  p.prompt_embeddings_ = Param(prompt_embeddings);
  if (config.kind == PromptKind::kMultitask) {
    const int64_t k = config.num_tasks, r = config.num_ranks;
    RETURN_IF_ERROR(CheckShape("prefix_task_cols", prefix_task_cols, {k, t, r}));
    RETURN_IF_ERROR(CheckShape("prefix_task_rows", prefix_task_rows, {k, r, d}));
    p.prefix_task_cols_ = Param(prefix_task_cols);
    p.prefix_task_rows_ = Param(prefix_task_rows);
  }
  return p;
}

absl::StatusOr<SoftPrompt> SoftPrompt::Random(const SoftPromptConfig& config,
                                              uint64_t seed) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor p = at::normal(0.0, 1.0, {config.total_tokens(), config.token_dim}, gen);
  return WithRandomFactors(config, p, gen);
}

absl::StatusOr<SoftPrompt> SoftPrompt::FromText(const SoftPromptConfig& config,
                                                const std::vector<int>& text_ids,
                                                const at::Tensor& word_embeddings,
                                                uint64_t seed, const at::Tensor& embed_scale) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  RETURN_IF_ERROR(CheckWordEmbeddings(config, word_embeddings));
  if (text_ids.empty()) {
    return absl::InvalidArgumentError("prompt_tuning_init_text: the init text has no tokens");
  }
  std::vector<int64_t> ids;
  ids.reserve(config.total_tokens());
  for (int i = 0; i < config.total_tokens(); ++i) {
    int id = text_ids[i % text_ids.size()];
    if (id < 0 || id >= word_embeddings.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt_tuning_init_text: token id ", id, " is outside the vocabulary of ",
          word_embeddings.size(0)));
    }
    ids.push_back(id);
  }
  at::Tensor index = at::tensor(ids, at::kLong);
  at::Tensor p = EmbeddingRows(word_embeddings, index, embed_scale);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return WithRandomFactors(config, p, gen);
}

absl::StatusOr<SoftPrompt> SoftPrompt::SampleVocab(const SoftPromptConfig& config,
                                                   const at::Tensor& word_embeddings,
                                                   uint64_t seed, const at::Tensor& embed_scale) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  RETURN_IF_ERROR(CheckWordEmbeddings(config, word_embeddings));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor index = at::randint(word_embeddings.size(0), {config.total_tokens()}, gen,
                                 at::TensorOptions().dtype(at::kLong));
  at::Tensor p = EmbeddingRows(word_embeddings, index, embed_scale);
  return WithRandomFactors(config, p, gen);
}

absl::StatusOr<SoftPrompt> SoftPrompt::FromSourceState(
    const SoftPromptConfig& config, const std::map<std::string, at::Tensor>& source,
    PromptInit init, int init_task, uint64_t seed) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  if (init != PromptInit::kAverageSourceTasks && init != PromptInit::kExactSourceTask &&
      init != PromptInit::kOnlySourceShared) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt_tuning_init: ", PromptInitName(init), " does not start from a source state"));
  }
  auto get = [&](const char* name) -> absl::StatusOr<at::Tensor> {
    auto it = source.find(name);
    if (it == source.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source state: tensor \"", name, "\" is missing (is it a multitask adapter?)"));
    }
    return it->second;
  };
  ASSIGN_OR_RETURN(at::Tensor shared, get("prompt_embeddings"));
  RETURN_IF_ERROR(CheckShape("source state: prompt_embeddings", shared,
                             {config.total_tokens(), config.token_dim}));
  if (init == PromptInit::kOnlySourceShared || config.kind == PromptKind::kPromptTuning) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    return WithRandomFactors(config, shared, gen);
  }
  ASSIGN_OR_RETURN(at::Tensor cols, get("prefix_task_cols"));
  ASSIGN_OR_RETURN(at::Tensor rows, get("prefix_task_rows"));
  if (cols.dim() != 3 || rows.dim() != 3 || cols.size(0) != rows.size(0) ||
      cols.size(1) != config.total_tokens() || cols.size(2) != config.num_ranks ||
      rows.size(1) != config.num_ranks || rows.size(2) != config.token_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "source state: prefix_task_cols ", ShapeString(cols), " and prefix_task_rows ",
        ShapeString(rows), " do not fit a prompt of ", config.total_tokens(),
        " tokens, ", config.token_dim, " features and rank ", config.num_ranks));
  }
  at::Tensor c, r;
  if (init == PromptInit::kAverageSourceTasks) {
    c = cols.to(at::kFloat).mean(0, /*keepdim=*/true);
    r = rows.to(at::kFloat).mean(0, /*keepdim=*/true);
  } else {
    if (init_task < 0 || init_task >= cols.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt_tuning_init_task: ", init_task, " is out of range; the source state has ",
          cols.size(0), " tasks"));
    }
    c = cols[init_task].unsqueeze(0);
    r = rows[init_task].unsqueeze(0);
  }
  c = c.expand({config.num_tasks, -1, -1});
  r = r.expand({config.num_tasks, -1, -1});
  return FromTensors(config, shared, c, r);
}

absl::StatusOr<SoftPrompt> SoftPrompt::FromTeachers(const SoftPromptConfig& config,
                                                    const std::vector<at::Tensor>& teachers) {
  RETURN_IF_ERROR(ValidateSoftPromptConfig(config));
  if (config.kind != PromptKind::kMultitask) {
    return absl::InvalidArgumentError("peft_type: distillation needs a multitask prompt");
  }
  if (static_cast<int>(teachers.size()) != config.num_tasks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_tasks: ", config.num_tasks, " tasks but ", teachers.size(), " teacher prompts"));
  }
  std::vector<at::Tensor> stacked;
  for (size_t i = 0; i < teachers.size(); ++i) {
    RETURN_IF_ERROR(CheckShape(absl::StrCat("teacher ", i).c_str(), teachers[i],
                               {config.total_tokens(), config.token_dim}));
    stacked.push_back(teachers[i].detach().to(at::kFloat));
  }
  at::Tensor shared = at::stack(stacked).mean(0);
  at::Tensor cols = at::ones({config.num_tasks, config.total_tokens(), config.num_ranks});
  at::Tensor rows = at::ones({config.num_tasks, config.num_ranks, config.token_dim});
  // With rank r, U V sums r products of ones; scale so that U V = 1.
  rows.div_(config.num_ranks);
  return FromTensors(config, shared, cols, rows);
}

at::Tensor SoftPrompt::Forward(const at::Tensor& task_ids, int64_t batch_size) const {
  if (config_.kind == PromptKind::kPromptTuning) {
    return prompt_embeddings_.unsqueeze(0).expand({batch_size, -1, -1});
  }
  at::Tensor cols = prefix_task_cols_.index_select(0, task_ids);  // [B, T, r]
  at::Tensor rows = prefix_task_rows_.index_select(0, task_ids);  // [B, r, d]
  return prompt_embeddings_.unsqueeze(0) * at::bmm(cols, rows);
}

at::Tensor SoftPrompt::TaskPrompt(int task) const {
  if (config_.kind == PromptKind::kPromptTuning) return prompt_embeddings_;
  return prompt_embeddings_ * at::mm(prefix_task_cols_[task], prefix_task_rows_[task]);
}

void SoftPrompt::MoveTo(c10::Device device) {
  for (at::Tensor* t : {&prompt_embeddings_, &prefix_task_cols_, &prefix_task_rows_}) {
    if (t->defined() && t->device() != device) {
      *t = t->detach().to(device).set_requires_grad(true);
    }
  }
  if (shared_frozen_) prompt_embeddings_ = prompt_embeddings_.detach();
}

void SoftPrompt::FreezeSharedPrompt() {
  if (config_.kind != PromptKind::kMultitask) return;
  shared_frozen_ = true;
  prompt_embeddings_ = prompt_embeddings_.detach();
}

std::vector<at::Tensor> SoftPrompt::Parameters() const {
  if (config_.kind == PromptKind::kPromptTuning) return {prompt_embeddings_};
  if (shared_frozen_) return {prefix_task_cols_, prefix_task_rows_};
  return {prompt_embeddings_, prefix_task_cols_, prefix_task_rows_};
}

std::map<std::string, at::Tensor> SoftPrompt::StateDict() const {
  std::map<std::string, at::Tensor> out{{"prompt_embeddings", prompt_embeddings_}};
  if (config_.kind == PromptKind::kMultitask) {
    out["prefix_task_cols"] = prefix_task_cols_;
    out["prefix_task_rows"] = prefix_task_rows_;
  }
  return out;
}

std::map<std::string, at::Tensor> SoftPrompt::CloneState() const {
  std::map<std::string, at::Tensor> out;
  for (auto& [name, t] : StateDict()) out[name] = t.detach().clone();
  return out;
}

absl::Status SoftPrompt::AssignState(const std::map<std::string, at::Tensor>& values,
                                     const std::string& source) const {
  at::NoGradGuard no_grad;
  for (auto& [name, param] : StateDict()) {
    auto it = values.find(name);
    if (it == values.end() || it->second.sizes() != param.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tensor \"", name, "\" is missing or has the wrong shape"));
    }
    param.copy_(it->second);
  }
  return absl::OkStatus();
}

}  // namespace mpt
