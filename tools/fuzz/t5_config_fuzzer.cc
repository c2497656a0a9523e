// libFuzzer target: a T5 config.json.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/model/t5_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = mpt::T5Config::FromJson(text, "config.json");
  if (!c.ok()) return 0;
  if (c->vocab_size <= 0 || c->d_model <= 0 || c->d_kv <= 0 || c->num_heads <= 0 ||
      c->eos_token_ids.empty()) {
    __builtin_trap();
  }
  volatile int64_t inner = static_cast<int64_t>(c->num_heads) * c->d_kv;
  (void)inner;
  return 0;
}
