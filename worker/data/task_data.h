// A stage's tasks, read from JSON Lines, tokenised and ready to batch
// (worker/eval/evaluator.h evaluates a prompt on them).
#ifndef MPT_WORKER_DATA_TASK_DATA_H_
#define MPT_WORKER_DATA_TASK_DATA_H_

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "proto/mpt/v1/spec.pb.h"
#include "worker/data/batching.h"
#include "worker/model/task_tokenizer.h"

namespace mpt {

struct TaskDataSet {
  mpt::v1::TaskData spec;
  std::vector<TokenizedExample> train;
  std::vector<TokenizedExample> eval;        // empty without eval_path
  std::vector<std::vector<int>> candidates;  // tokenised, for eval_mode "rank"
};

// Reads and tokenises every task of a stage; task k gets task_id k. Inputs
// (TaskTokenizer::EncodeInput) and targets and candidates (EncodeTarget)
// are cut to the TrainSpec's limits. Errors name the
// file and line (see jsonl_dataset.h); a line whose "task" field names
// another task is an error.
absl::StatusOr<std::vector<TaskDataSet>> LoadTaskData(
    const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
    const mpt::v1::TrainSpec& train, const TaskTokenizer& tokenizer);

// The training examples of each task, as PromptTrainer takes them.
std::vector<std::vector<TokenizedExample>> TrainSets(const std::vector<TaskDataSet>& tasks);

}  // namespace mpt

#endif  // MPT_WORKER_DATA_TASK_DATA_H_
