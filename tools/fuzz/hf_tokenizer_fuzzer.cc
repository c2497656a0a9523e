// libFuzzer target: HfTokenizer on arbitrary tokenizer.json bytes and on
// arbitrary text.
//
// The first byte picks the mode:
//  - even: the rest is text, encoded (with and without special tokens) by
//    one tokenizer folder of tests/testdata/tokenizers, picked by the
//    first byte's other bits (the fuzzer runs from the repository root);
//    the ids are decoded again, and ids made from the input bytes are
//    decoded too;
//  - odd: the rest is a tokenizer.json, a NUL byte, then a short text; the
//    file is loaded and, when it loads, the text encoded and decoded.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "worker/model/hf_tokenizer.h"

namespace {

const std::vector<std::unique_ptr<mpt::HfTokenizer>>& Folders() {
  static auto* folders = [] {
    auto* list = new std::vector<std::unique_ptr<mpt::HfTokenizer>>();
    for (const char* name :
         {"llama3", "qwen2", "gpt2", "llama2", "sp_bpe_fast", "metaspace", "custom", "gemma"}) {
      auto loaded = mpt::HfTokenizer::Load(std::string("tests/testdata/tokenizers/") + name);
      if (!loaded.ok()) {
        std::fprintf(stderr, "hf_tokenizer_fuzzer: run from the repository root: %s\n",
                     std::string(loaded.status().message()).c_str());
        std::abort();
      }
      list->push_back(*std::move(loaded));
    }
    return list;
  }();
  return *folders;
}

void Exercise(const mpt::HfTokenizer& tok, std::string_view text, std::string_view id_bytes) {
  for (bool special : {true, false}) {
    std::vector<int64_t> ids = tok.Encode(text, special);
    (void)tok.Decode(ids, false);
    (void)tok.Decode(ids, true);
  }
  // Ids from the input: byte pairs, some out of range.
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 1 < id_bytes.size() && ids.size() < 256; i += 2) {
    const int64_t raw = (static_cast<uint8_t>(id_bytes[i]) << 8) | static_cast<uint8_t>(id_bytes[i + 1]);
    ids.push_back(raw % (tok.vocab_size() + 8) - 4);
  }
  (void)tok.Decode(ids, false);
  (void)tok.Decode(ids, true);
  (void)tok.IdOf(text.substr(0, 16));
  (void)tok.IdToToken(ids.empty() ? 0 : ids[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    const auto& folders = Folders();
    Exercise(*folders[(data[0] >> 1) % folders.size()], input, input);
    return 0;
  }
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  std::string_view text = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  if (text.size() > 512) text = text.substr(0, 512);
  auto tok = mpt::HfTokenizer::LoadFromJson(json, "", "", "fuzz");
  if (!tok.ok()) return 0;
  Exercise(**tok, text, text);
  return 0;
}
