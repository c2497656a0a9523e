// adapter_check: loads adapter folders with ReadAdapter, checks that they
// fit a base model, and prints one line per folder for the end-to-end
// tests:
//
//   adapter_check --model=tests/testdata/t5_relu out/source/a out/distillation
//   out/source/a PROMPT_TUNING tokens=4 dim=64 tasks=1 names=
//   out/distillation MULTITASK_PROMPT_TUNING tokens=4 dim=64 tasks=3 names=a,b,c
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
#include "worker/model/t5_config.h"

ABSL_FLAG(std::string, model, "", "The base model folder the adapters must fit.");

namespace {
int Main(int argc, char** argv) {
  std::vector<char*> folders = absl::ParseCommandLine(argc, argv);
  int d_model = 0;
  if (!absl::GetFlag(FLAGS_model).empty()) {
    auto config = mpt::T5Config::FromJsonFile(absl::GetFlag(FLAGS_model) + "/config.json");
    if (!config.ok()) {
      std::fprintf(stderr, "adapter_check: %s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    d_model = static_cast<int>(config->d_model);
  }
  int failures = 0;
  for (size_t i = 1; i < folders.size(); ++i) {
    absl::StatusOr<mpt::Adapter> adapter = mpt::ReadAdapter(folders[i]);
    absl::Status fits = adapter.ok() && d_model > 0
                            ? mpt::CheckAdapterFitsModel(adapter->info, d_model)
                            : adapter.status();
    if (!fits.ok()) {
      std::fprintf(stderr, "adapter_check: %s: %s\n", folders[i],
                   std::string(fits.message()).c_str());
      ++failures;
      continue;
    }
    const mpt::SoftPromptConfig& c = adapter->info.prompt;
    std::printf("%s %s tokens=%d dim=%d tasks=%d names=%s\n", folders[i],
                c.kind == mpt::PromptKind::kMultitask ? "MULTITASK_PROMPT_TUNING"
                                                      : "PROMPT_TUNING",
                c.total_tokens(), c.token_dim,
                c.kind == mpt::PromptKind::kMultitask ? c.num_tasks : 1,
                absl::StrJoin(adapter->info.task_names, ",").c_str());
  }
  return failures == 0 ? 0 : 1;
}
}  // namespace

int main(int argc, char** argv) { return mpt::RunMain(argc, argv, Main); }
