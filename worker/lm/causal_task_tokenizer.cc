#include "worker/lm/causal_task_tokenizer.h"

#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

std::vector<int> ToInt(const std::vector<int64_t>& ids) {
  return std::vector<int>(ids.begin(), ids.end());
}

}  // namespace

absl::StatusOr<std::unique_ptr<CausalTaskTokenizer>> CausalTaskTokenizer::Create(
    std::shared_ptr<const HfTokenizer> tokenizer, int64_t model_vocab_size) {
  // An id past the embedding table would fail only at the first forward
  // pass, deep in a stage; a mismatched tokenizer and model is a bad folder.
  if (tokenizer->vocab_size() > model_vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer->source(), ": tokenizer.json holds ids up to ", tokenizer->vocab_size() - 1,
        ", beyond the model's ", model_vocab_size,
        " embedding rows (config.json vocab_size); the tokenizer does not belong to this model"));
  }
  const int64_t eos = tokenizer->eos_id();
  if (eos < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer->source(), ": tokenizer_config.json: eos_token: the tokenizer names no EOS "
        "token (targets end in it)"));
  }
  const int64_t pad = tokenizer->pad_id() >= 0 ? tokenizer->pad_id() : eos;
  for (const auto& [name, id] : {std::pair<const char*, int64_t>{"eos_token", eos},
                                 std::pair<const char*, int64_t>{"pad_token", pad}}) {
    if (id >= model_vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          tokenizer->source(), ": ", name, " has id ", id, ", beyond the model's ",
          model_vocab_size, " embedding rows (config.json vocab_size)"));
    }
  }
  return std::unique_ptr<CausalTaskTokenizer>(new CausalTaskTokenizer(
      std::move(tokenizer), static_cast<int>(eos), static_cast<int>(pad)));
}

std::vector<int> CausalTaskTokenizer::Encode(absl::string_view text) const {
  return ToInt(tokenizer_->Encode(std::string_view(text.data(), text.size()),
                                  /*add_special_tokens=*/true));
}

std::vector<int> CausalTaskTokenizer::EncodeInput(absl::string_view text, int max_length) const {
  std::vector<int> ids = Encode(text);
  if (max_length > 0 && static_cast<int>(ids.size()) > max_length) ids.resize(max_length);
  return ids;
}

std::vector<int> CausalTaskTokenizer::EncodeTarget(absl::string_view text, int max_length) const {
  std::vector<int> ids = ToInt(tokenizer_->Encode(std::string_view(text.data(), text.size()),
                                                  /*add_special_tokens=*/false));
  ids.push_back(eos_id_);
  if (max_length > 0 && static_cast<int>(ids.size()) > max_length) {
    ids.resize(max_length);
    ids.back() = eos_id_;
  }
  return ids;
}

std::string CausalTaskTokenizer::DecodeAnswer(absl::Span<const int> ids) const {
  std::vector<int64_t> answer;
  for (int id : ids) {
    if (id == eos_id_) break;
    answer.push_back(id);
  }
  return tokenizer_->Decode(answer, /*skip_special_tokens=*/true);
}

}  // namespace mpt
