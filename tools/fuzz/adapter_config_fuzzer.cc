// libFuzzer target: adapter_config.json as ReadAdapter interprets it.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/prompts/adapter_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = mpt::ParseAdapterConfig(text, "adapter_config.json");
  if (!c.ok()) return 0;
  // The documented ranges hold for everything accepted.
  if (c->num_virtual_tokens < 0 || c->num_virtual_tokens > mpt::kMaxAdapterTokens ||
      c->num_transformer_submodules < 1 || c->num_transformer_submodules > 2 ||
      c->token_dim < 0 || c->token_dim > mpt::kMaxAdapterDim || c->num_ranks < 1 ||
      c->num_ranks > mpt::kMaxAdapterRanks || c->num_tasks < 1 ||
      c->num_tasks > mpt::kMaxAdapterTasks) {
    __builtin_trap();
  }
  return 0;
}
