// Hugging Face `tokenizer.json` tokenizers for decoder-only models, without
// Python or libtorch: what transformers' AutoTokenizer(folder)(text) does for
// the BPE families Llama 2, Llama 3, Qwen 2 / 2.5, Mistral and GPT-2 use.
//
// A folder holds `tokenizer.json` and usually `tokenizer_config.json`
// (add_bos_token, add_eos_token, bos_token, eos_token, pad_token, unk_token)
// and `special_tokens_map.json`. The parts of tokenizer.json understood:
//   normalizer      null, NFC, Prepend, Replace (plain string pattern), or a
//                   Sequence of them
//   pre_tokenizer   null, ByteLevel (add_prefix_space, use_regex, trim_offsets
//                   ignored), Split (Regex or String pattern; behaviours
//                   Isolated, Removed, MergedWithPrevious, MergedWithNext,
//                   Contiguous; invert), Metaspace (replacement,
//                   prepend_scheme first / always / never, split), Digits,
//                   or a Sequence of them
//   model           BPE: vocab, merges ("a b" strings or ["a", "b"] pairs),
//                   ignore_merges, byte_fallback, fuse_unk, unk_token,
//                   continuing_subword_prefix, end_of_word_suffix; dropout
//                   must be null (no randomness)
//   post_processor  null, ByteLevel, TemplateProcessing (single sequence),
//                   or a Sequence of them
//   decoder         null, ByteLevel, Metaspace, Replace, ByteFallback, Fuse,
//                   Strip, or a Sequence of them
//   added_tokens    id, content, special, lstrip, rstrip, single_word,
//                   normalized
// Regular expressions are compiled from the file by PCRE2 (UTF and Unicode
// properties on), so \p{L}, \p{N}, lookahead and (?i:...) work as in the
// Oniguruma engine `tokenizers` uses. NFC comes from ICU.
//
// Encode(text, add_special_tokens), as Hugging Face does it:
//  1. Added tokens are cut out of the raw text first (leftmost, then longest
//     match), honouring lstrip / rstrip (the white space beside the token
//     goes with it) and single_word; a non-special added token with
//     normalized=true is matched in the normalized text of each stretch.
//  2. Each stretch between them is normalized, pre-tokenized and split into
//     tokens by BPE (whole pre-tokens found in the vocabulary are one token
//     when ignore_merges is set; byte_fallback spells unknown characters as
//     <0xNN> tokens; otherwise unknown characters become unk, runs of them
//     one unk with fuse_unk).
//  3. With add_special_tokens, BOS / EOS are added the way transformers
//     does for the folder: by tokenizer.json's post_processor, except that a
//     tokenizer_config.json stating add_bos_token / add_eos_token (as Llama
//     2's and Llama 3's do) rebuilds that template from those flags.
// Text that is not valid UTF-8 is first made valid the way Python's
// bytes.decode("utf-8", errors="replace") does: each maximal invalid
// subsequence becomes U+FFFD. So Encode(b) equals Hugging Face's ids of
// b.decode("utf-8", "replace"); common/utf8.h's IsValidUtf8 tells callers
// who would rather refuse such text beforehand.
//
// Decode(ids, skip_special_tokens): tokenizer.decode(ids,
// skip_special_tokens=...) of transformers with the folder's settings: the
// tokens are looked up, special ones dropped when asked, and the decoder
// run over the rest (added tokens are written as they are spelt); byte
// sequences that are not valid UTF-8 become U+FFFD as in Python; ids
// outside [0, vocab_size()) are ignored. Spaces before punctuation are
// cleaned up only when tokenizer_config.json sets
// clean_up_tokenization_spaces.
//
// Thread-safety: immutable after Load(); any number of threads may call
// Encode, Decode and the accessors at once.
#ifndef MPT_WORKER_MODEL_HF_TOKENIZER_H_
#define MPT_WORKER_MODEL_HF_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mpt {

class HfTokenizer {
 public:
  // Loads the tokenizer of a Hugging Face model folder: `folder`/tokenizer.json,
  // plus tokenizer_config.json and special_tokens_map.json when present.
  // NOT_FOUND (naming the path) when the folder or its tokenizer.json does
  // not exist; a folder with only tokenizer.model (SentencePiece) is
  // NOT_FOUND too, with a message saying that tokenizer.json is needed.
  // INVALID_ARGUMENT "<file>: <field path>: <problem>" for bad JSON, a
  // missing or ill-typed field, an unsupported component
  // ("tokenizer.json: pre_tokenizer.type \"Whitespace\" is not supported"),
  // a regular expression PCRE2 rejects, or a tokenizer_class in
  // tokenizer_config.json whose transformers class is not one of
  // PreTrainedTokenizerFast, LlamaTokenizer(Fast), Qwen2Tokenizer(Fast),
  // GPT2Tokenizer(Fast) (those classes rebuild parts of the pipeline, and
  // this class rebuilds them the same way). A special token named by
  // tokenizer_config.json that is neither in the vocabulary nor an added
  // token is added after the last id, as transformers does.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& folder);

  // As Load, from the files' contents (`tokenizer_config_json`,
  // `special_tokens_map_json` and the model's `config_json` may be empty:
  // absent). `what` names the folder in messages.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadFromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json,
      std::string_view special_tokens_map_json, const std::string& what,
      std::string_view config_json = {});

  ~HfTokenizer();
  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;

  // transformers' tokenizer(text, add_special_tokens=...).input_ids (see
  // above). Never fails.
  std::vector<int64_t> Encode(std::string_view text, bool add_special_tokens = true) const;

  // transformers' tokenizer.decode(ids, skip_special_tokens=...).
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;

  // len(tokenizer) in transformers: one more than the largest id of the
  // vocabulary and the added tokens.
  int64_t vocab_size() const;
  // Ids of tokenizer_config.json's (or special_tokens_map.json's) tokens;
  // -1 when the folder names none.
  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t pad_id() const;
  int64_t unk_id() const;
  // Whether Encode(text) adds BOS / EOS (add_special_tokens=true).
  bool adds_bos() const;
  bool adds_eos() const;
  // The id of a token as the vocabulary or added_tokens spell it
  // ("<|begin_of_text|>", "Ġthe"); -1 when there is none.
  int64_t IdOf(std::string_view token) const;
  // The token spelling of `id`; empty for an id outside [0, vocab_size())
  // or a hole in the id range.
  std::string IdToToken(int64_t id) const;
  // True for added tokens marked special.
  bool IsSpecial(int64_t id) const;

  // The folder (or `what`) this tokenizer was loaded from.
  const std::string& source() const { return source_; }

 private:
  struct Impl;

  HfTokenizer(std::string source, std::unique_ptr<const Impl> impl);

  std::string source_;
  std::unique_ptr<const Impl> impl_;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_HF_TOKENIZER_H_
