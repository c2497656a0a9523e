// adapter_check: loads adapter folders with ReadAdapter, checks that they
// fit a base model (its width and, by its family, the PEFT task_type), and
// prints one line per folder for the end-to-end tests:
//
//   adapter_check --model=tests/testdata/t5_relu out/source/a out/distillation
//   out/source/a PROMPT_TUNING tokens=4 dim=64 tasks=1 names= task_type=SEQ_2_SEQ_LM
//   out/distillation MULTITASK_PROMPT_TUNING tokens=4 dim=64 tasks=3 names=a,b,c task_type=SEQ_2_SEQ_LM
//
// Exit status 0 when every folder loads and fits, 1 otherwise.
#include <cstdio>
#include <string>
#include <vector>

#include "common/main_guard.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "worker/prompts/adapter_io.h"
#include "worker/lm/model_family.h"
#include "worker/model/llama_config.h"
#include "worker/model/t5_config.h"

ABSL_FLAG(std::string, model, "", "The base model folder the adapters must fit.");

namespace {
int Main(int argc, char** argv) {
  std::vector<char*> folders = absl::ParseCommandLine(argc, argv);
  int d_model = 0;
  std::string task_type;
  const std::string model = absl::GetFlag(FLAGS_model);
  if (!model.empty()) {
    absl::Status status;
    absl::StatusOr<mpt::ModelKind> kind = mpt::ReadModelKind(model);
    if (kind.ok() && kind->family == mpt::ModelFamily::kEncoderDecoder) {
      auto config = mpt::T5Config::FromJsonFile(model + "/config.json");
      status = config.status();
      if (config.ok()) d_model = static_cast<int>(config->d_model);
      task_type = "SEQ_2_SEQ_LM";
    } else if (kind.ok()) {
      auto config = mpt::LlamaConfig::FromJsonFile(model + "/config.json");
      status = config.status();
      if (config.ok()) d_model = config->hidden_size;
      task_type = "CAUSAL_LM";
    } else {
      status = kind.status();
    }
    if (!status.ok()) {
      std::fprintf(stderr, "adapter_check: %s\n", std::string(status.message()).c_str());
      return 1;
    }
  }
  int failures = 0;
  for (size_t i = 1; i < folders.size(); ++i) {
    absl::StatusOr<mpt::Adapter> adapter = mpt::ReadAdapter(folders[i]);
    absl::Status fits = adapter.ok() && d_model > 0
                            ? mpt::CheckAdapterFitsModel(adapter->info, d_model, task_type)
                            : adapter.status();
    if (!fits.ok()) {
      std::fprintf(stderr, "adapter_check: %s: %s\n", folders[i],
                   std::string(fits.message()).c_str());
      ++failures;
      continue;
    }
    const mpt::SoftPromptConfig& c = adapter->info.prompt;
    std::printf("%s %s tokens=%d dim=%d tasks=%d names=%s task_type=%s\n", folders[i],
                c.kind == mpt::PromptKind::kMultitask ? "MULTITASK_PROMPT_TUNING"
                                                      : "PROMPT_TUNING",
                c.total_tokens(), c.token_dim,
                c.kind == mpt::PromptKind::kMultitask ? c.num_tasks : 1,
                absl::StrJoin(adapter->info.task_names, ",").c_str(),
                adapter->info.task_type.c_str());
  }
  return failures == 0 ? 0 : 1;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
