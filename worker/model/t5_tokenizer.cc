#include "worker/model/t5_tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "worker/model/grapheme_clusters.h"

namespace mpt {
namespace {

constexpr absl::string_view kPad = "<pad>";
constexpr absl::string_view kEos = "</s>";
constexpr absl::string_view kUnk = "<unk>";
constexpr absl::string_view kExtraPrefix = "<extra_id_";
// U+2581, SentencePiece's stand-in for a space.
constexpr absl::string_view kMetaSpace = "\xE2\x96\x81";
// tokenizers' Unigram scores an unknown character this far below the
// lowest piece score (kUnkPenalty in SentencePiece).
constexpr double kUnknownPenalty = 10.0;
// tokenizers tries a whole grapheme cluster in the character map only when
// it is shorter than this many bytes.
constexpr size_t kWholeClusterLimit = 6;

// ---------------------------------------------------------------------------
// Just enough of the protobuf wire format to read a SentencePiece ModelProto:
//   repeated SentencePiece pieces = 1;   // piece = 1 (string), score = 2 (float)
//   NormalizerSpec normalizer_spec = 3;  // precompiled_charsmap = 2 (bytes)

class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}

  bool done() const { return pos_ >= data_.size(); }

  // Reads the next field key; false at a malformed one.
  bool ReadKey(uint32_t* field, uint32_t* wire_type) {
    uint64_t key;
    if (!ReadVarint(&key) || (key >> 3) == 0 || (key >> 3) > 0x1FFFFFFF) return false;
    *field = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<uint32_t>(key & 7);
    return true;
  }

  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      *value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }

  bool ReadBytes(absl::string_view* bytes) {
    uint64_t length;
    if (!ReadVarint(&length) || length > data_.size() - pos_) return false;
    *bytes = data_.substr(pos_, static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return true;
  }

  bool ReadFixed32(uint32_t* value) {
    if (data_.size() - pos_ < 4) return false;
    *value = 0;
    for (int i = 3; i >= 0; --i) *value = (*value << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += 4;
    return true;
  }

  // Skips a value of the given wire type; false for groups or bad data.
  bool Skip(uint32_t wire_type) {
    uint64_t ignored;
    absl::string_view bytes;
    switch (wire_type) {
      case 0:
        return ReadVarint(&ignored);
      case 1:
        if (data_.size() - pos_ < 8) return false;
        pos_ += 8;
        return true;
      case 2:
        return ReadBytes(&bytes);
      case 5:
        if (data_.size() - pos_ < 4) return false;
        pos_ += 4;
        return true;
      default:
        return false;
    }
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

struct Piece {
  std::string text;
  float score = 0;
};

bool ParsePiece(absl::string_view message, Piece* piece) {
  WireReader reader(message);
  while (!reader.done()) {
    uint32_t field, wire_type;
    if (!reader.ReadKey(&field, &wire_type)) return false;
    if (field == 1 && wire_type == 2) {
      absl::string_view text;
      if (!reader.ReadBytes(&text)) return false;
      piece->text = std::string(text);
    } else if (field == 2 && wire_type == 5) {
      uint32_t bits;
      if (!reader.ReadFixed32(&bits)) return false;
      std::memcpy(&piece->score, &bits, sizeof(bits));
    } else if (!reader.Skip(wire_type)) {
      return false;
    }
  }
  return true;
}

// Reads the pieces and the precompiled character map; an error message on
// failure.
absl::Status ParseModelProto(absl::string_view data, std::vector<Piece>* pieces,
                             std::string* charsmap) {
  WireReader reader(data);
  while (!reader.done()) {
    uint32_t field, wire_type;
    if (!reader.ReadKey(&field, &wire_type)) {
      return absl::InvalidArgumentError("malformed protobuf field key");
    }
    if (field == 1 && wire_type == 2) {
      absl::string_view message;
      Piece piece;
      if (!reader.ReadBytes(&message) || !ParsePiece(message, &piece)) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed piece number ", pieces->size()));
      }
      pieces->push_back(std::move(piece));
    } else if (field == 3 && wire_type == 2) {
      absl::string_view spec;
      if (!reader.ReadBytes(&spec)) return absl::InvalidArgumentError("malformed normalizer_spec");
      WireReader spec_reader(spec);
      while (!spec_reader.done()) {
        uint32_t spec_field, spec_wire_type;
        if (!spec_reader.ReadKey(&spec_field, &spec_wire_type)) {
          return absl::InvalidArgumentError("malformed normalizer_spec");
        }
        if (spec_field == 2 && spec_wire_type == 2) {
          absl::string_view map;
          if (!spec_reader.ReadBytes(&map)) {
            return absl::InvalidArgumentError("malformed normalizer_spec.precompiled_charsmap");
          }
          *charsmap = std::string(map);
        } else if (!spec_reader.Skip(spec_wire_type)) {
          return absl::InvalidArgumentError("malformed normalizer_spec");
        }
      }
    } else if (!reader.Skip(wire_type)) {
      return absl::InvalidArgumentError(absl::StrCat("malformed protobuf field ", field));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// SentencePiece's precompiled character map: a little-endian uint32 byte
// count of a Darts double-array trie, the trie's 32-bit units, then the
// NUL-terminated replacement strings the trie's values point into.

class CharsMap {
 public:
  // An empty map normalises nothing.
  static absl::StatusOr<CharsMap> Parse(absl::string_view blob) {
    CharsMap map;
    if (blob.empty()) return map;
    if (blob.size() < 4) return absl::InvalidArgumentError("precompiled_charsmap is truncated");
    uint32_t trie_bytes = 0;
    for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<uint8_t>(blob[i]);
    if (trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4) {
      return absl::InvalidArgumentError("precompiled_charsmap has a bad trie size");
    }
    map.units_.resize(trie_bytes / 4);
    for (size_t i = 0; i < map.units_.size(); ++i) {
      uint32_t unit = 0;
      for (int b = 3; b >= 0; --b) unit = (unit << 8) | static_cast<uint8_t>(blob[4 + 4 * i + b]);
      map.units_[i] = unit;
    }
    map.replacements_ = std::string(blob.substr(4 + trie_bytes));
    return map;
  }

  // The replacement of the shortest key that is a prefix of `text`, as
  // tokenizers' Precompiled::transform picks it; false when none is.
  bool ShortestPrefixReplacement(absl::string_view text, absl::string_view* replacement) const {
    if (units_.empty()) return false;
    size_t node = Offset(units_[0]);
    for (char ch : text) {
      const uint8_t c = static_cast<uint8_t>(ch);
      if (c == 0) return false;  // Darts keys end at NUL
      node ^= c;
      if (node >= units_.size()) return false;
      const uint32_t unit = units_[node];
      if ((unit & ((1u << 31) | 0xFF)) != c) return false;  // label
      node ^= Offset(unit);
      if ((unit >> 8) & 1) {  // has a leaf: a key ends here
        if (node >= units_.size()) return false;
        const size_t at = units_[node] & ((1u << 31) - 1);
        if (at > replacements_.size()) return false;
        const size_t end = replacements_.find('\0', at);
        *replacement = absl::string_view(replacements_)
                           .substr(at, (end == std::string::npos ? replacements_.size() : end) - at);
        return true;
      }
    }
    return false;
  }

 private:
  static size_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string replacements_;
};

// Reads a whole file: NOT_FOUND when it does not exist, INVALID_ARGUMENT when
// it cannot be read.
}  // namespace

// ---------------------------------------------------------------------------

struct T5Tokenizer::Model {
  // Hugging Face's vocabulary: the SentencePiece pieces, then
  // <extra_id_99> .. <extra_id_0> with score 0.
  std::vector<std::string> pieces;
  std::vector<double> scores;
  int spm_size = 0;
  absl::flat_hash_map<std::string, int> piece_ids;
  size_t max_piece_bytes = 0;
  double unknown_score = 0;
  CharsMap charsmap;

  int vocab_size() const { return static_cast<int>(pieces.size()); }

  // Length of the special token spelled at the start of `text`, or 0; its id
  // goes to `*id`.
  size_t MatchSpecialToken(absl::string_view text, int* id) const;
  // tokenizers' Precompiled normaliser.
  std::string Normalize(absl::string_view text) const;
  // WhitespaceSplit, Metaspace and Unigram over one stretch of text between
  // special tokens.
  void EncodeOrdinaryText(absl::string_view text, std::vector<int>* ids) const;
  // Unigram Viterbi over one pre-tokenized part ("▁word").
  void EncodeWordPart(absl::string_view part, std::vector<int>* ids) const;
};

size_t T5Tokenizer::Model::MatchSpecialToken(absl::string_view text, int* id) const {
  if (absl::StartsWith(text, kPad)) {
    *id = 0;
    return kPad.size();
  }
  if (absl::StartsWith(text, kEos)) {
    *id = 1;
    return kEos.size();
  }
  if (absl::StartsWith(text, kUnk)) {
    *id = 2;
    return kUnk.size();
  }
  if (!absl::StartsWith(text, kExtraPrefix)) return 0;
  // "<extra_id_", a number 0 .. 99 without leading zeros, ">".
  size_t pos = kExtraPrefix.size();
  const size_t digits_begin = pos;
  int index = 0;
  while (pos < text.size() && pos - digits_begin < 3 && text[pos] >= '0' && text[pos] <= '9') {
    index = index * 10 + (text[pos] - '0');
    ++pos;
  }
  const size_t num_digits = pos - digits_begin;
  if (num_digits == 0 || (num_digits > 1 && text[digits_begin] == '0')) return 0;
  if (index >= kNumExtraIds || pos >= text.size() || text[pos] != '>') return 0;
  *id = vocab_size() - 1 - index;
  return pos + 1;
}

std::string T5Tokenizer::Model::Normalize(absl::string_view text) const {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = GraphemeClusterEnd(text, pos);
    const absl::string_view cluster = text.substr(pos, end - pos);
    absl::string_view replacement;
    if (cluster.size() < kWholeClusterLimit &&
        charsmap.ShortestPrefixReplacement(cluster, &replacement)) {
      // The whole cluster goes, even where the rule covered only its start.
      out.append(replacement.data(), replacement.size());
    } else {
      size_t at = 0;
      while (at < cluster.size()) {
        char32_t c;
        const size_t length = DecodeUtf8(cluster, at, &c);
        const absl::string_view character = cluster.substr(at, length);
        if (charsmap.ShortestPrefixReplacement(character, &replacement)) {
          out.append(replacement.data(), replacement.size());
        } else {
          out.append(character.data(), character.size());
        }
        at += length;
      }
    }
    pos = end;
  }
  return out;
}

void T5Tokenizer::Model::EncodeOrdinaryText(absl::string_view text,
                                            std::vector<int>* ids) const {
  if (text.empty()) return;
  const std::string normalized = Normalize(text);
  const absl::string_view all = normalized;
  size_t pos = 0;
  while (pos < all.size()) {
    // WhitespaceSplit: a word runs to the next white space character.
    size_t word_end = pos;
    while (word_end < all.size()) {
      char32_t c;
      const size_t length = DecodeUtf8(all, word_end, &c);
      if (IsUnicodeWhiteSpace(c)) break;
      word_end += length;
    }
    if (word_end > pos) {
      // Metaspace: "▁" in front unless the word has one, then a new part
      // before every "▁".
      const absl::string_view word = all.substr(pos, word_end - pos);
      std::string prefixed;
      if (!absl::StartsWith(word, kMetaSpace)) prefixed = std::string(kMetaSpace);
      prefixed.append(word.data(), word.size());
      const absl::string_view rest_of_word = prefixed;
      size_t part_begin = 0;
      while (part_begin < rest_of_word.size()) {
        size_t next = rest_of_word.find(kMetaSpace, part_begin + kMetaSpace.size());
        if (next == absl::string_view::npos) next = rest_of_word.size();
        EncodeWordPart(rest_of_word.substr(part_begin, next - part_begin), ids);
        part_begin = next;
      }
      pos = word_end;
    }
    if (pos < all.size()) {
      char32_t c;
      pos += DecodeUtf8(all, pos, &c);  // the white space itself
    }
  }
}

void T5Tokenizer::Model::EncodeWordPart(absl::string_view part, std::vector<int>* ids) const {
  // best[i]: the best segmentation of part[0, i); tokenizers' encode_optimized.
  struct Node {
    int id = -1;
    int starts_at = -1;  // -1: not reached yet
    double score = 0;
  };
  const size_t size = part.size();
  std::vector<Node> best(size + 1);
  best[0].starts_at = 0;
  size_t start = 0;
  while (start < size) {
    char32_t c;
    const size_t char_length = DecodeUtf8(part, start, &c);
    const double score_here = best[start].score;
    bool single_character_piece = false;
    const size_t longest = std::min(max_piece_bytes, size - start);
    for (size_t length = 1; length <= longest; ++length) {
      auto it = piece_ids.find(part.substr(start, length));
      if (it == piece_ids.end()) continue;
      Node& target = best[start + length];
      const double candidate = score_here + scores[it->second];
      if (target.starts_at < 0 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = static_cast<int>(start);
        target.id = it->second;
      }
      if (length == char_length) single_character_piece = true;
    }
    if (!single_character_piece) {
      Node& target = best[start + char_length];
      const double candidate = score_here + unknown_score;
      if (target.starts_at < 0 || candidate > target.score) {
        target.score = candidate;
        target.starts_at = static_cast<int>(start);
        target.id = 2;
      }
    }
    start += char_length;
  }
  // Walk back from the end; a run of unknowns becomes one <unk>.
  std::vector<int> reversed;
  size_t end = size;
  while (end > 0) {
    const Node& node = best[end];
    const bool unknown = node.id == 2;
    if (!(unknown && !reversed.empty() && reversed.back() == 2)) reversed.push_back(node.id);
    end = static_cast<size_t>(node.starts_at);
  }
  ids->insert(ids->end(), reversed.rbegin(), reversed.rend());
}

// ---------------------------------------------------------------------------

T5Tokenizer::T5Tokenizer(std::string model_path, std::unique_ptr<const Model> model)
    : model_path_(std::move(model_path)), model_(std::move(model)) {}

T5Tokenizer::~T5Tokenizer() = default;

absl::StatusOr<std::unique_ptr<T5Tokenizer>> T5Tokenizer::Load(
    const std::string& model_folder_or_spiece_path) {
  std::string path = model_folder_or_spiece_path;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(
        path, ": no such file or folder (expected a T5 model folder with spiece.model, "
              "or the spiece.model file)"));
  }
  if (S_ISDIR(st.st_mode)) {
    path = absl::StrCat(path, absl::EndsWith(path, "/") ? "" : "/", "spiece.model");
    if (::stat(path.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(
          path, ": no such file; a T5 model folder needs its SentencePiece model spiece.model"));
    }
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  auto invalid = [&path](absl::string_view problem) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a usable SentencePiece model: ", problem));
  };
  if (bytes->empty()) return invalid("the file is empty");

  std::vector<Piece> pieces;
  std::string charsmap_blob;
  absl::Status parsed = ParseModelProto(*bytes, &pieces, &charsmap_blob);
  if (!parsed.ok()) return invalid(parsed.message());
  if (pieces.size() < 3 || pieces[0].text != kPad || pieces[1].text != kEos ||
      pieces[2].text != kUnk) {
    return invalid(absl::StrCat(
        "a T5 vocabulary starts with the pieces <pad>, </s>, <unk>; this one has ",
        pieces.size(), " pieces",
        pieces.size() >= 3 ? absl::StrCat(", starting \"", pieces[0].text, "\", \"",
                                          pieces[1].text, "\", \"", pieces[2].text, "\"")
                           : ""));
  }
  absl::StatusOr<CharsMap> charsmap = CharsMap::Parse(charsmap_blob);
  if (!charsmap.ok()) return invalid(charsmap.status().message());

  auto model = std::make_unique<Model>();
  model->spm_size = static_cast<int>(pieces.size());
  model->charsmap = *std::move(charsmap);
  for (Piece& piece : pieces) {
    model->pieces.push_back(std::move(piece.text));
    // Hugging Face keeps SentencePiece's float scores as doubles.
    model->scores.push_back(static_cast<double>(piece.score));
  }
  for (int k = kNumExtraIds - 1; k >= 0; --k) {
    model->pieces.push_back(absl::StrCat(kExtraPrefix, k, ">"));
    model->scores.push_back(0.0);
  }
  double min_score = std::numeric_limits<double>::infinity();
  for (int id = 0; id < model->vocab_size(); ++id) {
    const std::string& piece = model->pieces[id];
    // Of two equal pieces the later one keeps the text, as in tokenizers.
    if (!piece.empty()) model->piece_ids[piece] = id;
    model->max_piece_bytes = std::max(model->max_piece_bytes, piece.size());
    min_score = std::min(min_score, model->scores[id]);
  }
  model->unknown_score = min_score - kUnknownPenalty;
  return std::unique_ptr<T5Tokenizer>(new T5Tokenizer(path, std::move(model)));
}

int T5Tokenizer::vocab_size() const { return model_->vocab_size(); }

int T5Tokenizer::spm_vocab_size() const { return model_->spm_size; }

int T5Tokenizer::ExtraId(int index) const {
  if (index < 0 || index >= kNumExtraIds) return -1;
  return vocab_size() - 1 - index;
}

bool T5Tokenizer::IsSpecial(int id) const {
  return (id >= 0 && id <= 2) || (id >= model_->spm_size && id < vocab_size());
}

std::string T5Tokenizer::IdToPiece(int id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return model_->pieces[id];
}

std::vector<int> T5Tokenizer::Encode(absl::string_view text, bool add_eos) const {
  std::vector<int> ids;
  size_t segment_begin = 0;
  size_t pos = 0;
  while ((pos = text.find('<', pos)) != absl::string_view::npos) {
    int id = -1;
    const size_t length = model_->MatchSpecialToken(text.substr(pos), &id);
    if (length == 0) {
      ++pos;
      continue;
    }
    model_->EncodeOrdinaryText(text.substr(segment_begin, pos - segment_begin), &ids);
    ids.push_back(id);
    pos += length;
    segment_begin = pos;
  }
  model_->EncodeOrdinaryText(text.substr(segment_begin), &ids);
  if (add_eos) ids.push_back(eos_id());
  return ids;
}

std::string T5Tokenizer::Decode(absl::Span<const int> ids, bool skip_special_tokens) const {
  std::string text;
  bool first = true;
  for (int id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && IsSpecial(id)) continue;
    absl::string_view piece = model_->pieces[id];
    // Metaspace decoding: "▁" is a space, but the first token drops them.
    while (!piece.empty()) {
      if (absl::StartsWith(piece, kMetaSpace)) {
        if (!first) text += ' ';
        piece.remove_prefix(kMetaSpace.size());
      } else {
        text += piece.front();
        piece.remove_prefix(1);
      }
    }
    first = false;
  }
  return text;
}

}  // namespace mpt
