#include "worker/lm/t5_task_tokenizer.h"

namespace mpt {
namespace {

// As TruncateKeepEos (worker/data/batching.h): when cut, the last kept id
// becomes EOS.
std::vector<int> CutKeepEos(std::vector<int> ids, int max_length, int eos) {
  if (max_length > 0 && static_cast<int>(ids.size()) > max_length) {
    ids.resize(max_length);
    ids.back() = eos;
  }
  return ids;
}

}  // namespace

std::vector<int> T5TaskTokenizer::Encode(absl::string_view text) const {
  return tokenizer_->Encode(text);
}

std::vector<int> T5TaskTokenizer::EncodeInput(absl::string_view text, int max_length) const {
  return CutKeepEos(tokenizer_->Encode(text), max_length, tokenizer_->eos_id());
}

std::vector<int> T5TaskTokenizer::EncodeTarget(absl::string_view text, int max_length) const {
  return CutKeepEos(tokenizer_->Encode(text), max_length, tokenizer_->eos_id());
}

std::string T5TaskTokenizer::DecodeAnswer(absl::Span<const int> ids) const {
  return tokenizer_->Decode(ids);
}

}  // namespace mpt
