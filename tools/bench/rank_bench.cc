// Times rank-mode evaluation (PromptedLanguageModel::RankScores): each
// example's K candidate answers scored by their log-probability after
// [prompt; input], as the worker's evaluator does for a task whose
// eval_mode is "rank".
//
//   rank_bench --model=FOLDER [--examples=64 --batch_size=8 --candidates=4
//              --candidate_length=2 --input_length=64 --num_virtual_tokens=100
//              --num_transformer_submodules=1 --multitask --threads=0 --reps=3]
//
// Random ids, a random prompt; prints the best and median time of the
// whole pass over the examples, and examples per second.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/main_guard.h"
#include "common/status_macros.h"
#include "worker/lm/base_model_loader.h"
#include "worker/model/compute_threads.h"
#include "worker/prompts/prompted_model.h"

ABSL_FLAG(std::string, model, "", "Model folder (T5 or decoder-only).");
ABSL_FLAG(int, examples, 64, "Examples scored per pass.");
ABSL_FLAG(int, batch_size, 8, "Examples per RankScores call.");
ABSL_FLAG(int, candidates, 4, "Candidate answers per example (K).");
ABSL_FLAG(int, candidate_length, 2, "Tokens per candidate.");
ABSL_FLAG(int, input_length, 64, "Input tokens per example.");
ABSL_FLAG(int, num_virtual_tokens, 100, "Prompt length.");
ABSL_FLAG(int, num_transformer_submodules, 1, "1 or 2 (T5 only).");
ABSL_FLAG(bool, multitask, false, "A multitask prompt (with 2 submodules: a T5 decoder prefix).");
ABSL_FLAG(int, threads, 0, "Total compute threads (0: every usable core).");
ABSL_FLAG(int, reps, 3, "Timed passes.");

namespace mpt {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Main() {
  ComputeThreadOptions thread_options;
  thread_options.total = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(ComputeThreads threads, ApplyComputeThreads(thread_options));
  ASSIGN_OR_RETURN(std::shared_ptr<const PromptedLanguageModel> model,
                   LoadPromptedModel(absl::GetFlag(FLAGS_model)));
  const int examples = absl::GetFlag(FLAGS_examples), batch = absl::GetFlag(FLAGS_batch_size);
  const int k = absl::GetFlag(FLAGS_candidates), c = absl::GetFlag(FLAGS_candidate_length);
  const int s = absl::GetFlag(FLAGS_input_length), nv = absl::GetFlag(FLAGS_num_virtual_tokens);
  const int submodules = absl::GetFlag(FLAGS_num_transformer_submodules);
  for (const auto& [flag, value] : {std::pair<const char*, int>{"examples", examples},
                                     {"batch_size", batch},
                                     {"candidates", k},
                                     {"candidate_length", c},
                                     {"input_length", s},
                                     {"num_virtual_tokens", nv}}) {
    if (value < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": must be positive, got ", value));
    }
  }
  const PromptLayout layout =
      PromptLayout::Peft(absl::GetFlag(FLAGS_multitask), nv, submodules);
  RETURN_IF_ERROR(model->CheckLayout(layout));
  std::printf("%s\n", Describe(threads).c_str());
  at::NoGradGuard no_grad;
  at::manual_seed(1);
  const int64_t vocab = model->vocab_size();
  const auto ids = at::TensorOptions().dtype(at::kLong);
  const at::Tensor prompts =
      at::randn({batch, static_cast<int64_t>(nv) * submodules, model->hidden_size()});
  const at::Tensor input_ids = at::randint(3, vocab, {batch, s}, ids);
  const at::Tensor mask = at::ones({batch, s}, ids);
  const at::Tensor candidates = at::randint(3, vocab, {batch, k, c}, ids);
  std::vector<double> seconds;
  for (int rep = 0; rep <= absl::GetFlag(FLAGS_reps); ++rep) {  // rep 0: warm-up
    const auto start = Clock::now();
    for (int done = 0; done < examples; done += batch) {
      const int64_t n = std::min(batch, examples - done);
      at::Tensor scores =
          model->RankScores(prompts.narrow(0, 0, n), layout, input_ids.narrow(0, 0, n),
                            mask.narrow(0, 0, n), candidates.narrow(0, 0, n));
      (void)scores.sum().item<double>();
    }
    if (rep > 0) seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  std::printf("%s: %d examples x %d candidates of %d tokens, input %d, prompt %d x %d, batch %d\n",
              model->model_type().c_str(), examples, k, c, s, nv, submodules, batch);
  std::printf("  pass best %.1f ms, median %.1f ms   %.1f examples/s\n", 1e3 * seconds.front(),
              1e3 * seconds[seconds.size() / 2], examples / seconds.front());
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

int main(int argc, char** argv) { return mpt::RunFlagsMain(argc, argv, mpt::Main); }
