// stage_bench: times one MPT stage's training step on a model folder.
//
//   stage_bench --model=demo/model --stage=distillation --batch_size=8 \
//       --input_length=64 --target_length=16 --num_virtual_tokens=100
//
// The batch is random token ids of exactly the stated lengths (EOS
// included), so the figures depend only on the shapes. The loop is the
// product's own: PromptTrainer with the stage's step function and AdamW.
// Prints step time, tokens per second (real input + target tokens, the
// prompt not counted) and the process's peak resident memory; --json prints
// one JSON object instead. tools/bench/peft_bench.py times the same steps
// with PEFT and transformers.
#include <sys/resource.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/collectives/communicator.h"
#include "worker/training/mpt_stages.h"
#include "worker/training/prompt_trainer.h"
#include "worker/model/t5_model.h"

ABSL_FLAG(std::string, model, "", "Model folder (config.json + safetensors).");
ABSL_FLAG(std::string, stage, "source", "source, distillation or target.");
ABSL_FLAG(int, batch_size, 8, "Examples per step.");
ABSL_FLAG(int, input_length, 64, "Input tokens per example (EOS included).");
ABSL_FLAG(int, target_length, 16, "Target tokens per example (EOS included).");
ABSL_FLAG(int, num_virtual_tokens, 100, "Prompt length.");
ABSL_FLAG(int, num_tasks, 4, "Tasks mixed in a batch (distillation, target).");
ABSL_FLAG(int, steps, 5, "Timed steps.");
ABSL_FLAG(int, warmup_steps, 1, "Untimed steps first.");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: libtorch's default).");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:N].");
ABSL_FLAG(bool, json, false, "Print one JSON object.");

namespace mpt {
namespace {

using Clock = std::chrono::steady_clock;

double PeakRssMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

// Records when each step finished.
class StepClock : public ProgressSink {
 public:
  void OnEvent(const ProgressEvent& e) override {
    if (e.kind == ProgressKind::kStep) times.push_back(Clock::now());
  }
  std::vector<Clock::time_point> times;
};

std::vector<std::vector<TokenizedExample>> RandomTasks(int tasks, int per_task, int vocab,
                                                       int input_length, int target_length) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> id(3, vocab - 1);
  std::vector<std::vector<TokenizedExample>> out(tasks);
  for (int k = 0; k < tasks; ++k) {
    for (int i = 0; i < per_task; ++i) {
      TokenizedExample e;
      for (int j = 0; j + 1 < input_length; ++j) e.input_ids.push_back(id(rng));
      e.input_ids.push_back(1);
      for (int j = 0; j + 1 < target_length; ++j) e.target_ids.push_back(id(rng));
      e.target_ids.push_back(1);
      e.task_id = k;
      out[k].push_back(std::move(e));
    }
  }
  return out;
}

absl::Status Main() {
  const std::string stage = absl::GetFlag(FLAGS_stage);
  if (stage != "source" && stage != "distillation" && stage != "target") {
    return absl::InvalidArgumentError("--stage: source, distillation or target");
  }
  if (absl::GetFlag(FLAGS_threads) > 0) torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  T5LoadOptions load;
  load.device = c10::Device(absl::GetFlag(FLAGS_device));
  const auto load_start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<T5Model> model, T5Model::Load(absl::GetFlag(FLAGS_model), load));
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  const double rss_after_load = PeakRssMiB();

  const int tasks = stage == "source" ? 1 : absl::GetFlag(FLAGS_num_tasks);
  const int batch = absl::GetFlag(FLAGS_batch_size);
  auto data = RandomTasks(tasks, batch, static_cast<int>(model->config().vocab_size),
                          absl::GetFlag(FLAGS_input_length), absl::GetFlag(FLAGS_target_length));

  mpt::v1::PromptSpec prompt_spec;
  prompt_spec.set_num_virtual_tokens(absl::GetFlag(FLAGS_num_virtual_tokens));
  prompt_spec.set_num_transformer_submodules(1);
  prompt_spec.set_num_ranks(1);
  SoftPromptConfig config;
  config.kind = stage == "source" ? PromptKind::kPromptTuning : PromptKind::kMultitask;
  config.num_virtual_tokens = prompt_spec.num_virtual_tokens();
  config.token_dim = static_cast<int>(model->config().d_model);
  config.num_tasks = tasks;
  ASSIGN_OR_RETURN(SoftPrompt prompt, SoftPrompt::Random(config, 7));
  prompt.MoveTo(model->device());

  at::Tensor teachers;
  StepFunction step;
  if (stage == "distillation") {
    teachers = at::randn({tasks, config.total_tokens(), config.token_dim}).to(model->device());
    step = MakeDistillationStep(*model, prompt_spec, &prompt, teachers, DistillationLoss{});
  } else {
    step = MakePlmStep(*model,
                       PromptLayout::Peft(config.kind == PromptKind::kMultitask,
                                          config.num_virtual_tokens, 1),
                       &prompt);
  }
  TrainerOptions options;
  const int warmup = absl::GetFlag(FLAGS_warmup_steps), steps = absl::GetFlag(FLAGS_steps);
  options.train.set_steps(warmup + steps);
  options.train.set_batch_size(batch);
  options.train.mutable_optimizer()->set_learning_rate(0.3);
  options.train.mutable_optimizer()->set_schedule("constant");
  options.train.mutable_optimizer()->set_max_grad_norm(1.0);
  options.sampling = TaskSampling::kUniform;
  options.stage = stage;
  LocalCommunicator comm;
  StepClock clock;
  PromptTrainer trainer(options, &prompt, &data, 0, &comm, &clock, nullptr);
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(TrainResult result, trainer.Run(step, nullptr));
  if (static_cast<int>(clock.times.size()) != warmup + steps) {
    return absl::InternalError("the trainer reported fewer steps than it ran");
  }
  const auto timed_from = warmup > 0 ? clock.times[warmup - 1] : start;
  const double seconds = std::chrono::duration<double>(clock.times.back() - timed_from).count();
  const double step_ms = 1000.0 * seconds / steps;
  const double tokens = static_cast<double>(batch) *
                        (absl::GetFlag(FLAGS_input_length) + absl::GetFlag(FLAGS_target_length));
  const double tokens_per_second = tokens * steps / seconds;
  const double peak = PeakRssMiB();

  nlohmann::json j = {{"implementation", "mpt"},
                      {"stage", stage},
                      {"model", absl::GetFlag(FLAGS_model)},
                      {"parameters", model->num_parameters()},
                      {"batch_size", batch},
                      {"input_length", absl::GetFlag(FLAGS_input_length)},
                      {"target_length", absl::GetFlag(FLAGS_target_length)},
                      {"num_virtual_tokens", config.num_virtual_tokens},
                      {"threads", torch::get_num_threads()},
                      {"steps", steps},
                      {"step_ms", step_ms},
                      {"tokens_per_second", tokens_per_second},
                      {"load_seconds", load_seconds},
                      {"rss_after_load_mib", rss_after_load},
                      {"peak_rss_mib", peak}};
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("stage %-13s batch %d x (%d + %d tokens), prompt %d, %d threads\n", stage.c_str(),
                batch, absl::GetFlag(FLAGS_input_length), absl::GetFlag(FLAGS_target_length),
                config.num_virtual_tokens, torch::get_num_threads());
    std::printf("  step %.1f ms   %.0f tokens/s   peak RSS %.0f MiB (%.0f MiB after loading)\n",
                step_ms, tokens_per_second, peak, rss_after_load);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace mpt

namespace {
int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::Status s = mpt::Main();
  if (!s.ok()) {
    std::fprintf(stderr, "stage_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
