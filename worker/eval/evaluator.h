// Evaluation of a prompt on a stage's tasks: greedy generation or rank
// classification per task, scored into a MetricsReport.
//
// Thread-safety: EvaluatePrompt keeps no state; the model and prompt are
// only read.
#ifndef MPT_WORKER_EVAL_EVALUATOR_H_
#define MPT_WORKER_EVAL_EVALUATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/task_data.h"
#include "worker/eval/metrics.h"
#include "worker/model/task_tokenizer.h"
#include "worker/prompts/prompted_model.h"
#include "worker/prompts/soft_prompt.h"

namespace mpt {

struct EvalOptions {
  int num_virtual_tokens = 0;
  int num_transformer_submodules = 1;
  int max_new_tokens = 32;  // generation
  int max_examples = 0;     // per task; 0: all
  int batch_size = 32;
};

// Evaluates `prompt` on the eval sets of `tasks`; the prompt's task id for
// tasks[i] is task_ids[i] (ignored for a plain prompt). Reports accuracy and
// macro-F1 per task (exact match too for generated answers). "rank" tasks
// pick the candidate with the highest summed log-probability; "generate"
// tasks decode greedily (PromptedLanguageModel::Generate: the prompt placed
// as PEFT's generate places it). Tasks without eval data are skipped.
absl::StatusOr<MetricsReport> EvaluatePrompt(const PromptedLanguageModel& model,
                                             const TaskTokenizer& tokenizer,
                                             const SoftPrompt& prompt,
                                             const std::vector<TaskDataSet>& tasks,
                                             const std::vector<int>& task_ids,
                                             const EvalOptions& options,
                                             const std::string& stage, int64_t step);

}  // namespace mpt

#endif  // MPT_WORKER_EVAL_EVALUATOR_H_
