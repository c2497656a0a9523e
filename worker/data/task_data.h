// A stage's tasks, read from JSON Lines, tokenised and ready to batch, and
// the evaluation of a prompt on them.
#ifndef MPT_WORKER_DATA_TASK_DATA_H_
#define MPT_WORKER_DATA_TASK_DATA_H_

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/data/batching.h"
#include "worker/eval/metrics.h"
#include "worker/prompts/soft_prompt.h"
#include "worker/model/t5_model.h"
#include "worker/model/t5_tokenizer.h"

namespace mpt {

struct TaskDataSet {
  mpt::v1::TaskData spec;
  std::vector<TokenizedExample> train;
  std::vector<TokenizedExample> eval;        // empty without eval_path
  std::vector<std::vector<int>> candidates;  // tokenised, for eval_mode "rank"
};

// Reads and tokenises every task of a stage; task k gets task_id k. Inputs
// and targets are cut to the TrainSpec's limits, EOS kept. Errors name the
// file and line (see jsonl_dataset.h); a line whose "task" field names
// another task is an error.
absl::StatusOr<std::vector<TaskDataSet>> LoadTaskData(
    const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
    const mpt::v1::TrainSpec& train, const T5Tokenizer& tokenizer);

// The training examples of each task, as PromptTrainer takes them.
std::vector<std::vector<TokenizedExample>> TrainSets(const std::vector<TaskDataSet>& tasks);

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
// tasks decode greedily (the prompt goes before the encoder input, as PEFT's
// generate does). Tasks without eval data are skipped.
absl::StatusOr<MetricsReport> EvaluatePrompt(const T5Model& model, const T5Tokenizer& tokenizer,
                                             const SoftPrompt& prompt,
                                             const std::vector<TaskDataSet>& tasks,
                                             const std::vector<int>& task_ids,
                                             const EvalOptions& options,
                                             const std::string& stage, int64_t step);

}  // namespace mpt

#endif  // MPT_WORKER_DATA_TASK_DATA_H_
