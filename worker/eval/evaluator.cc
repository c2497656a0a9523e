#include "worker/eval/evaluator.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "common/status_macros.h"
#include "worker/data/batching.h"
#include "worker/model/labels.h"

namespace mpt {
namespace {

// Predicted answer texts of one batch.
std::vector<std::string> PredictBatch(const PromptedLanguageModel& model,
                                      const TaskTokenizer& tokenizer,
                                      const SoftPrompt& prompt, const TaskDataSet& task,
                                      int task_id,
                                      const std::vector<const TokenizedExample*>& examples,
                                      const EvalOptions& options) {
  const int64_t b = static_cast<int64_t>(examples.size());
  const c10::Device device = model.device();
  Batch batch = Collate(examples, tokenizer.pad_id());
  batch.input_ids = batch.input_ids.to(device);
  batch.attention_mask = batch.attention_mask.to(device);
  at::Tensor task_ids = at::full({b}, task_id, at::TensorOptions().dtype(at::kLong).device(device));
  std::vector<std::string> predictions;
  if (task.spec.eval_mode() == "rank") {
    // The same candidates for every example: [b, K, C], -100 padded.
    std::vector<const std::vector<int>*> rows;
    for (const auto& cand : task.candidates) rows.push_back(&cand);
    const at::Tensor candidates = PadRows(rows, kIgnoreIndex).unsqueeze(0).expand({b, -1, -1});
    const at::Tensor prompts = prompt.Forward(task_ids, b);
    const PromptLayout layout =
        PromptLayout::Peft(prompt.config().kind == PromptKind::kMultitask,
                           options.num_virtual_tokens, options.num_transformer_submodules);
    const at::Tensor scores = model.RankScores(prompts, layout, batch.input_ids,
                                               batch.attention_mask, candidates.to(device));
    const at::Tensor best = scores.argmax(-1).cpu();
    for (int64_t i = 0; i < b; ++i) {
      predictions.push_back(task.spec.candidates(static_cast<int>(best[i].item<int64_t>())));
    }
    return predictions;
  }
  at::Tensor ids = model.Generate(prompt.Forward(task_ids, b), options.num_virtual_tokens,
                                  batch.input_ids, batch.attention_mask, options.max_new_tokens)
                       .cpu();
  for (int64_t i = 0; i < b; ++i) {
    std::vector<int> row;
    for (int64_t j = 0; j < ids.size(1); ++j) row.push_back(static_cast<int>(ids[i][j].item<int64_t>()));
    predictions.push_back(tokenizer.DecodeAnswer(row));
  }
  return predictions;
}

}  // namespace

absl::StatusOr<MetricsReport> EvaluatePrompt(const PromptedLanguageModel& model,
                                             const TaskTokenizer& tokenizer,
                                             const SoftPrompt& prompt,
                                             const std::vector<TaskDataSet>& tasks,
                                             const std::vector<int>& task_ids,
                                             const EvalOptions& options,
                                             const std::string& stage, int64_t step) {
  at::NoGradGuard no_grad;
  MetricsReport report(stage, step);
  for (size_t k = 0; k < tasks.size(); ++k) {
    const TaskDataSet& task = tasks[k];
    if (task.eval.empty()) continue;
    size_t n = task.eval.size();
    if (options.max_examples > 0) n = std::min<size_t>(n, options.max_examples);
    std::vector<std::string> predictions, references;
    for (size_t start = 0; start < n; start += options.batch_size) {
      std::vector<const TokenizedExample*> chunk;
      for (size_t i = start; i < std::min(n, start + options.batch_size); ++i) {
        chunk.push_back(&task.eval[i]);
        references.push_back(task.eval[i].target);
      }
      std::vector<std::string> p =
          PredictBatch(model, tokenizer, prompt, task, task_ids[k], chunk, options);
      predictions.insert(predictions.end(), p.begin(), p.end());
    }
    RETURN_IF_ERROR(report.AddTask(task.spec.name(), predictions, references));
  }
  return report;
}

}  // namespace mpt
