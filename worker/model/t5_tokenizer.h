// T5's tokenizer without Python, libtorch or libsentencepiece: the pipeline
// of Hugging Face's T5Tokenizer (transformers 5, the `tokenizers` backend
// that AutoTokenizer returns), rebuilt from a `spiece.model` file.
//
// Ids: 0 .. N-1 are the SentencePiece pieces, with <pad> = 0, </s> = 1,
// <unk> = 2 as in every T5 model; then 100 sentinels, where "<extra_id_K>"
// has the id N + 99 - K (<extra_id_0> is the last id, <extra_id_99> is N).
// vocab_size() is N + 100: 32100 for the public T5 checkpoints, whose
// embedding matrices have 32128 rows (the extra rows are never produced).
//
// Encode(text), as Hugging Face does it:
//  1. The special tokens <pad>, </s>, <unk> and <extra_id_0> .. <extra_id_99>
//     are cut out of the raw text wherever they appear (exact and
//     case-sensitive; the longest wins, so "<extra_id_10>" is one token).
//  2. Each stretch of text between them is tokenized on its own:
//     a. normalised with the model's precompiled character map, grapheme
//        cluster by cluster the way `tokenizers` does it (a cluster shorter
//        than 6 bytes whose start has a rule is replaced whole, so combining
//        marks after e.g. "e\u0301" are dropped);
//     b. split into words at Unicode white space, which disappears;
//     c. each word gets a "▁" in front unless it starts with one, and is cut
//        before every further "▁";
//     d. each part is split into pieces by the unigram model (Viterbi over
//        the piece scores; characters outside the vocabulary become <unk>,
//        and a run of them one <unk>).
//     So white space next to a special token is dropped, and the word after
//     one starts with "▁": "a<extra_id_0>b" and "a <extra_id_0> b" give the
//     same ids. Normalisation may also produce the text of a special token
//     ("＜/s＞" -> "</s>"), which then matches it as a piece, as in Hugging Face.
//  3. With add_eos, </s> is appended (Hugging Face's default).
//
// Decode(ids), as Hugging Face does it: special tokens are dropped when
// skip_special_tokens is set and written literally otherwise ("</s>",
// "<extra_id_0>"); each "▁" becomes a space, except that the first token
// written loses all its "▁"; ids outside [0, vocab_size()) are ignored.
// Spaces before punctuation are not cleaned up (transformers'
// clean_up_tokenization_spaces is off for T5).
//
// Thread-safety: immutable after Load(); any number of threads may call
// Encode and Decode at once.
#ifndef MPT_WORKER_MODEL_T5_TOKENIZER_H_
#define MPT_WORKER_MODEL_T5_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace mpt {

class T5Tokenizer {
 public:
  // Number of sentinel tokens <extra_id_0> .. <extra_id_99>.
  static constexpr int kNumExtraIds = 100;

  // Loads `model_folder_or_spiece_path`: a model folder holding
  // spiece.model, or the path of a SentencePiece model file itself.
  // NOT_FOUND (the message names the missing path) when it does not exist or
  // the folder has no spiece.model; INVALID_ARGUMENT (message
  // "<file>: <problem>") when the file cannot be read, is not a
  // SentencePiece model, or does not start with <pad>, </s>, <unk>.
  static absl::StatusOr<std::unique_ptr<T5Tokenizer>> Load(
      const std::string& model_folder_or_spiece_path);

  ~T5Tokenizer();
  T5Tokenizer(const T5Tokenizer&) = delete;
  T5Tokenizer& operator=(const T5Tokenizer&) = delete;

  // Hugging Face's tokenizer(text).input_ids (see above); ends with eos_id()
  // when add_eos is true. `text` is UTF-8; a byte that is not part of valid
  // UTF-8 is an unknown character.
  std::vector<int> Encode(absl::string_view text, bool add_eos = true) const;

  // Hugging Face's tokenizer.decode(ids, skip_special_tokens=...).
  std::string Decode(absl::Span<const int> ids, bool skip_special_tokens = true) const;

  int pad_id() const { return 0; }
  int eos_id() const { return 1; }
  int unk_id() const { return 2; }
  // SentencePiece pieces plus the 100 sentinels.
  int vocab_size() const;
  // Pieces of the SentencePiece model alone.
  int spm_vocab_size() const;
  // Id of "<extra_id_<index>>" for index in [0, 100); -1 otherwise.
  int ExtraId(int index) const;
  // True for <pad>, </s>, <unk> and the sentinels.
  bool IsSpecial(int id) const;
  // The piece of `id` as Hugging Face spells it ("▁world", "</s>",
  // "<extra_id_3>"); empty for an id outside [0, vocab_size()).
  std::string IdToPiece(int id) const;

  // The spiece.model file this tokenizer was loaded from.
  const std::string& model_path() const { return model_path_; }

 private:
  struct Model;

  T5Tokenizer(std::string model_path, std::unique_ptr<const Model> model);

  std::string model_path_;
  std::unique_ptr<const Model> model_;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_T5_TOKENIZER_H_
