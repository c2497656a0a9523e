// Hugging Face `tokenizer.json` tokenizers for decoder-only models, without
// Python or libtorch: what transformers 5's AutoTokenizer(folder)(text) does
// for the BPE tokenizers of Llama 2, Llama 3, Qwen 2 / 2.5, Mistral and GPT-2.
//
// A folder holds `tokenizer.json`, usually `tokenizer_config.json`
// (tokenizer_class, bos_token, eos_token, pad_token, unk_token, legacy,
// add_prefix_space) and sometimes `special_tokens_map.json`; `config.json`
// is read for model_type and tokenizer_class only. A folder with only a
// SentencePiece `tokenizer.model` (no tokenizer.json) is refused (NOT_FOUND).
//
// The parts of tokenizer.json understood:
//   normalizer      null, NFC, Prepend, Replace (String or Regex pattern), or
//                   a Sequence of them
//   pre_tokenizer   null, ByteLevel (add_prefix_space, use_regex),
//                   Split (Regex or String pattern; behaviours Isolated,
//                   Removed, MergedWithPrevious, MergedWithNext, Contiguous;
//                   invert), Metaspace (replacement, prepend_scheme first /
//                   always / never, split), or a Sequence of them
//   model           BPE: vocab, merges ("a b" strings or ["a", "b"] pairs),
//                   ignore_merges, byte_fallback, fuse_unk, unk_token,
//                   continuing_subword_prefix, end_of_word_suffix; dropout
//                   null or 0
//   post_processor  null, ByteLevel, TemplateProcessing (its single-sequence
//                   template), or a Sequence of them
//   decoder         null, ByteLevel, Metaspace, Replace, ByteFallback, Fuse,
//                   Strip, or a Sequence of them
//   added_tokens    id, content, special, lstrip, rstrip, single_word,
//                   normalized
// Anything else (another type, truncation set, padding ignored) is an
// error naming the field. Regular expressions are compiled from the file by
// PCRE2 (UTF, Unicode properties), so \p{L}, \p{N}, lookaround and (?i:...)
// work as in the Oniguruma engine of `tokenizers`; empty matches split text
// as Oniguruma's iterator yields them. NFC runs over tables generated from
// `tokenizers`' own NFD/NFC (tools/make_nfc_table.py), whose Unicode
// version is older than PCRE2's.
//
// The class transformers builds decides some parts, as AutoTokenizer picks
// it: tokenizer_class (from tokenizer_config.json, else config.json),
// corrected by config.json's model_type (qwen2 -> Qwen2Tokenizer; mistral,
// mixtral, phi3 -> the file as is; a byte-level tokenizer.json under
// LlamaTokenizer's name -> the file as is).
//   PreTrainedTokenizerFast / TokenizersBackend / none: the file as is.
//   LlamaTokenizer(Fast): the file's vocab, merges, added tokens and
//     post_processor; BPE with byte_fallback and fuse_unk and no unk;
//     no normalizer; Metaspace(prepend_scheme "first", or "always" with
//     legacy=true, or "never" with add_prefix_space=false; no split);
//     decoder Replace("▁", " "), ByteFallback, Fuse, Strip(1 leading space,
//     unless add_prefix_space=false).
//   Qwen2Tokenizer(Fast): NFC, Split(Qwen 2's regex) + ByteLevel(no regex),
//     byte-level decoder, no unk.
//   GPT2Tokenizer(Fast): ByteLevel(GPT-2's regex), byte-level decoder.
// Other classes are refused. Named tokens the files do not state take the
// class's defaults (Llama: <s>, </s>, <unk>; Qwen 2: <|endoftext|> as EOS,
// pad and unk; GPT-2: <|endoftext|>). special_tokens_map.json overrides
// tokenizer_config.json unless the latter has added_tokens_decoder. Tokens
// that only tokenizer_config.json names (its added_tokens_decoder entries
// by id, then bos/eos/unk/sep/pad/cls/mask_token, then
// extra_special_tokens / additional_special_tokens) are added as
// transformers adds them: the vocabulary's id when the vocabulary has the
// token, else the next id after the last.
//
// Encode(text, add_special_tokens), as Hugging Face does it:
//  1. Added tokens are cut out of the raw text first (leftmost, then longest
//     match), honouring lstrip / rstrip (the white space beside the token
//     goes with it) and single_word; added tokens with normalized=true are
//     matched in the normalized text of each stretch. With
//     split_special_tokens (tokenizer_config.json), special ones are not.
//  2. Each stretch between them is normalized, pre-tokenized and split into
//     tokens by BPE (whole pre-tokens found in the vocabulary are one token
//     when ignore_merges is set; byte_fallback spells unknown characters as
//     <0xNN> tokens; otherwise unknown characters become unk, runs of them
//     one unk with fuse_unk, or are dropped when there is no unk_token).
//  3. With add_special_tokens, the post_processor's template adds BOS / EOS.
//     transformers 5 drops tokenizer_config.json's add_bos_token /
//     add_eos_token whenever tokenizer.json exists, and so does this class.
// Text that is not valid UTF-8 is first made valid the way Python's
// bytes.decode("utf-8", errors="replace") does: each maximal invalid
// subsequence becomes U+FFFD. So Encode(b) equals Hugging Face's ids of
// b.decode("utf-8", "replace"); common/utf8.h's IsValidUtf8 tells callers
// who would rather refuse such text beforehand. A regex match that exceeds
// PCRE2's resource limits ends that pre-tokenizer's matching for the piece
// (the rest is one piece); no real pattern comes near them.
//
// Decode(ids, skip_special_tokens): transformers' tokenizer.decode(ids,
// skip_special_tokens=...): the tokens are looked up (added tokens as they
// are spelt), special added tokens dropped when asked, and the decoder run
// over the rest; byte sequences that are not valid UTF-8 become U+FFFD as in
// Python; ids outside [0, vocab_size()) are ignored. transformers 5 does
// not clean up spaces for BPE tokenizers (clean_up_tokenization_spaces is
// ignored unless clean_up_tokenization_spaces_for_bpe_even_though_it_will_
// corrupt_output is set too).
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
  // INVALID_ARGUMENT "<folder>/<file>: <field path>: <problem>" for bad
  // JSON, a missing or ill-typed field, an unsupported component
  // ("<folder>/tokenizer.json: pre_tokenizer.type \"Whitespace\" is not
  // supported"), a regular expression PCRE2 rejects, a merge whose tokens
  // are not in the vocabulary, an id above 2^24, or a tokenizer class other
  // than those above. Other read errors as common/file_util.h's ReadFile.
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
