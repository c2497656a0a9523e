// libFuzzer target: JSON Lines parsing (the in-memory parser behind
// ReadJsonl), with and without a set of allowed tasks and a small line limit.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/data/jsonl_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  mpt::JsonlOptions options;
  options.default_task = "sst2";
  auto all = mpt::ParseJsonl(text, "fuzz.jsonl", options);
  if (all.ok() && all->empty()) __builtin_trap();  // documented: non-empty on success
  options.allowed_tasks = {"sst2", "rte"};
  options.max_line_bytes = 64;
  (void)mpt::ParseJsonl(text, "fuzz.jsonl", options);
  return 0;
}
