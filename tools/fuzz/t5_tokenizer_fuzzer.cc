// libFuzzer target: T5Tokenizer::Load on an arbitrary spiece.model, then a
// few texts encoded and the ids decoded again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/fuzz/fuzz_file.h"
#include "worker/model/t5_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static mpt::FuzzFile* file = new mpt::FuzzFile();
  auto tok = mpt::T5Tokenizer::Load(file->Write(data, size));
  if (!tok.ok()) return 0;
  for (const char* text : {"sst2 sentence: a gripping film", "", "  <extra_id_0>x</s>",
                           "caf\xc3\xa9 \xef\xbc\x9c/s\xef\xbc\x9e \xff\xfe", "e\xcc\x81\xcc\x81"}) {
    std::vector<int> ids = (*tok)->Encode(text);
    (void)(*tok)->Decode(ids, /*skip_special_tokens=*/false);
    (void)(*tok)->Decode(ids, /*skip_special_tokens=*/true);
  }
  std::vector<int> odd = {-1, 0, 1, 2, 3, (*tok)->vocab_size() - 1, (*tok)->vocab_size(), 1 << 30};
  (void)(*tok)->Decode(odd, false);
  return 0;
}
