// libFuzzer target: a decoder-only (llama, qwen2, mistral, ministral) config.json.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/model/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = mpt::LlamaConfig::FromJson(text, "config.json");
  if (!c.ok()) return 0;
  // What the model's loader relies on once a config parses.
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
      c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 ||
      c->head_dim <= 0 || c->head_dim % 2 != 0 ||
      c->num_attention_heads % c->num_key_value_heads != 0) {
    __builtin_trap();
  }
  volatile int64_t dims = static_cast<int64_t>(c->q_dim()) + c->kv_dim();
  (void)dims;
  return 0;
}
