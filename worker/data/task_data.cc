#include "worker/data/task_data.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "worker/data/jsonl_dataset.h"

namespace mpt {
namespace {

// `candidates`: for the eval file of a task evaluated by ranking, the only
// targets it may hold (a target outside them could never be predicted, and
// the task's accuracy would silently read 0).
absl::StatusOr<std::vector<TokenizedExample>> ReadTask(
    const std::string& path, const std::string& task, int task_id,
    const mpt::v1::TrainSpec& train, const TaskTokenizer& tokenizer,
    const google::protobuf::RepeatedPtrField<std::string>* candidates = nullptr) {
  JsonlOptions options;
  options.default_task = task;
  options.allowed_tasks = {task};
  ASSIGN_OR_RETURN(std::vector<Example> examples, ReadJsonl(path, options));
  std::vector<TokenizedExample> out;
  out.reserve(examples.size());
  for (const Example& e : examples) {
    if (candidates != nullptr &&
        std::find(candidates->begin(), candidates->end(), e.target) == candidates->end()) {
      std::string listed;
      for (const std::string& c : *candidates) {
        absl::StrAppend(&listed, listed.empty() ? "" : ", ", QuoteForError(c));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", e.line, ": target ", QuoteForError(e.target), " is not one of task ",
          QuoteForError(task), "'s candidates (", listed,
          "): evaluation by rank picks one of them and could never count it correct"));
    }
    TokenizedExample t;
    t.input_ids = tokenizer.EncodeInput(e.input, train.max_input_length());
    t.target_ids = tokenizer.EncodeTarget(e.target, train.max_target_length());
    t.task_id = task_id;
    t.target = e.target;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<TaskDataSet>> LoadTaskData(
    const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& tasks,
    const mpt::v1::TrainSpec& train, const TaskTokenizer& tokenizer) {
  std::vector<TaskDataSet> out;
  for (int k = 0; k < tasks.size(); ++k) {
    TaskDataSet set;
    set.spec = tasks[k];
    ASSIGN_OR_RETURN(set.train, ReadTask(set.spec.train_path(), set.spec.name(), k, train, tokenizer));
    if (!set.spec.eval_path().empty()) {
      const bool rank = set.spec.eval_mode() == "rank";
      ASSIGN_OR_RETURN(set.eval, ReadTask(set.spec.eval_path(), set.spec.name(), k, train,
                                          tokenizer, rank ? &set.spec.candidates() : nullptr));
    }
    for (const std::string& c : set.spec.candidates()) {
      set.candidates.push_back(tokenizer.EncodeTarget(c, train.max_target_length()));
    }
    out.push_back(std::move(set));
  }
  return out;
}

std::vector<std::vector<TokenizedExample>> TrainSets(const std::vector<TaskDataSet>& tasks) {
  std::vector<std::vector<TokenizedExample>> out;
  for (const TaskDataSet& t : tasks) out.push_back(t.train);
  return out;
}

}  // namespace mpt
