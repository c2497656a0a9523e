// libFuzzer target: a decoder-only config.json (every family LlamaConfig
// reads, a multimodal Gemma 3's text_config included).
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/model/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = mpt::LlamaConfig::FromJson(text, "config.json");
  if (!c.ok()) return 0;
  // What the model's loader relies on once a config parses: positive sizes,
  // whole groups of query heads, and a rotated part that fits the head (an
  // odd width w rotates w + 1 dimensions; only phi3's partial rotation
  // leaves an odd head or an odd width).
  const int rotated = c->rotary_dim + c->rotary_dim % 2;
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
      c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 ||
      c->head_dim <= 0 || c->num_attention_heads % c->num_key_value_heads != 0 ||
      c->rotary_dim < 0 || rotated > c->head_dim ||
      (c->model_type != "phi3" && (c->head_dim % 2 != 0 || c->rotary_dim != c->head_dim))) {
    __builtin_trap();
  }
  volatile int64_t dims = static_cast<int64_t>(c->q_dim()) + c->kv_dim();
  (void)dims;
  return 0;
}
