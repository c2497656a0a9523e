#include "worker/model/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

using json = nlohmann::json;

// Debian's Abseil has its own string_view; hash-map lookups take that one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// U+2581, SentencePiece's stand-in for a space.
constexpr std::string_view kMetaSpace = "\xE2\x96\x81";
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";
// The largest token id accepted (real vocabularies stay below 2^18); bounds
// the id -> token table.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
// The pre-tokenizer regex of ByteLevel(use_regex=true) (GPT-2's).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// The regex transformers' Qwen2Tokenizer always uses.
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------
// UTF-8.

// Length of the well-formed UTF-8 sequence at text[pos], or 0 when the bytes
// there are not one; `*prefix` gets the length of the longest prefix of a
// well-formed sequence (Unicode's "maximal subpart", at least 1).
size_t WellFormedLength(std::string_view text, size_t pos, size_t* prefix) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
  const uint8_t b0 = byte(0);
  *prefix = 1;
  if (b0 < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t i = 1; i < need; ++i) {
    if (pos + i >= text.size()) return 0;
    const uint8_t b = byte(i);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return 0;
    *prefix = i + 1;
  }
  return need;
}

// `text` with every maximal invalid subpart replaced by U+FFFD, as Python's
// bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do.
std::string ToValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t prefix;
    const size_t length = WellFormedLength(text, pos, &prefix);
    if (length > 0) {
      out.append(text.data() + pos, length);
      pos += length;
    } else {
      out.append(kReplacementChar);
      pos += prefix;
    }
  }
  return out;
}

// Decodes the code point at text[pos] of valid UTF-8; returns its length.
size_t NextChar(std::string_view text, size_t pos, char32_t* c) {
  const uint8_t b0 = static_cast<uint8_t>(text[pos]);
  size_t length = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  if (pos + length > text.size()) length = text.size() - pos;
  char32_t value = length == 1 ? b0 : length == 2 ? (b0 & 0x1F) : length == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t i = 1; i < length; ++i) value = (value << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  *c = value;
  return length;
}

// Start of the code point that ends at text[end] (valid UTF-8, end > 0).
size_t PrevCharStart(std::string_view text, size_t end) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Rust's char::is_whitespace (the White_Space property).
bool IsWhitespace(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// ---------------------------------------------------------------------------
// NFC (Unicode's canonical decomposition, reordering and composition) over
// the tables of tools/make_nfc_table.py.

struct CombiningClassRun {
  char32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {
  char32_t code_point;
  uint32_t offset, length;
};
struct Composition {
  char32_t first, second, composite;
};

#include "worker/model/nfc_table.inc"

constexpr char32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161,
                   kTrailBase = 0x11A7;
constexpr int kVowelCount = 21, kTrailCount = 28, kSyllableCount = 11172;

uint8_t CombiningClass(char32_t c) {
  if (c < 0x300) return 0;
  const auto* end = std::end(kCombiningClasses);
  const auto* it = std::upper_bound(std::begin(kCombiningClasses), end, c,
                                    [](char32_t v, const CombiningClassRun& r) { return v < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return c <= it->last ? it->combining_class : 0;
}

void Decompose(char32_t c, std::u32string* out) {
  if (c >= kHangulBase && c < kHangulBase + kSyllableCount) {
    const int index = static_cast<int>(c - kHangulBase);
    out->push_back(kLeadBase + index / (kVowelCount * kTrailCount));
    out->push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
    if (index % kTrailCount != 0) out->push_back(kTrailBase + index % kTrailCount);
    return;
  }
  const auto* end = std::end(kDecompositions);
  const auto* it = std::lower_bound(std::begin(kDecompositions), end, c,
                                    [](const Decomposition& d, char32_t v) { return d.code_point < v; });
  if (it == end || it->code_point != c) {
    out->push_back(c);
    return;
  }
  out->append(kDecompositionData + it->offset, it->length);
}

// The primary composite of (first, second), or 0.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kLeadBase && first < kLeadBase + 19 && second >= kVowelBase &&
      second < kVowelBase + kVowelCount) {
    return kHangulBase + ((first - kLeadBase) * kVowelCount + (second - kVowelBase)) * kTrailCount;
  }
  if (first >= kHangulBase && first < kHangulBase + kSyllableCount &&
      (first - kHangulBase) % kTrailCount == 0 && second > kTrailBase &&
      second < kTrailBase + kTrailCount) {
    return first + (second - kTrailBase);
  }
  const auto* end = std::end(kCompositions);
  const auto* it = std::lower_bound(std::begin(kCompositions), end, std::make_pair(first, second),
                                    [](const Composition& c, const std::pair<char32_t, char32_t>& v) {
                                      return std::make_pair(c.first, c.second) < v;
                                    });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

// `text` (valid UTF-8) in Normalization Form C.
std::string Nfc(std::string_view text) {
  bool below_0300 = true;  // NFC leaves such text as it is
  for (size_t pos = 0; pos < text.size() && below_0300;) {
    char32_t c;
    pos += NextChar(text, pos, &c);
    below_0300 = c < 0x300;
  }
  if (below_0300) return std::string(text);
  std::u32string d;
  for (size_t pos = 0; pos < text.size();) {
    char32_t c;
    pos += NextChar(text, pos, &c);
    Decompose(c, &d);
  }
  // Canonical ordering: a stable sort of each run of non-starters by class.
  for (size_t i = 0; i < d.size();) {
    if (CombiningClass(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && CombiningClass(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t a, char32_t b) {
      return CombiningClass(a) < CombiningClass(b);
    });
    i = j;
  }
  // Canonical composition.
  size_t starter = 0;
  bool have_starter = false;
  int last_class = -1;
  size_t out = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int cls = CombiningClass(c);
    if (have_starter && (last_class < cls || last_class == 0)) {
      const char32_t composite = Compose(d[starter], c);
      if (composite != 0) {
        d[starter] = composite;
        continue;
      }
    }
    if (cls == 0) {
      starter = out;
      have_starter = true;
    }
    last_class = cls;
    d[out++] = c;
  }
  d.resize(out);
  std::string result;
  result.reserve(text.size());
  for (char32_t c : d) AppendUtf8(c, &result);
  return result;
}

// ---------------------------------------------------------------------------
// GPT-2's byte <-> printable character table.

struct ByteTable {
  std::string byte_to_char[256];               // UTF-8 of the stand-in character
  absl::flat_hash_map<char32_t, uint8_t> char_to_byte;

  ByteTable() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      AppendUtf8(c, &byte_to_char[b]);
      char_to_byte[c] = static_cast<uint8_t>(b);
    }
  }
};

const ByteTable& Bytes() {
  static const ByteTable* table = new ByteTable();
  return *table;
}

// ---------------------------------------------------------------------------
// PCRE2 patterns (compiled once, matched from any thread).

class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern,
                                                              bool literal) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // PCRE2_LITERAL admits no PCRE2_UCP (which only matters to classes).
    const uint32_t options = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat("the regular expression does not compile (",
                                                     reinterpret_cast<const char*>(message),
                                                     " at offset ", offset, ")"));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    if (context == nullptr) {
      pcre2_code_free(code);
      return absl::ResourceExhaustedError("out of memory compiling a regular expression");
    }
    // Bounds the work of one match (a pathological pattern in a file); the
    // patterns of real tokenizers need a few hundred steps at most.
    pcre2_set_match_limit(context, kMatchLimit);
    return std::shared_ptr<const Regex>(new Regex(code, context));
  }

  ~Regex() {
    pcre2_match_context_free(context_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The matches in `text` (valid UTF-8), left to right, as [begin, end)
  // byte ranges, the way the Oniguruma iterator of `tokenizers` yields them:
  // empty matches count (they split text), except one right where the
  // previous match ended. A match error (a resource limit) ends the search:
  // the rest of the text is then not a match.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const {
    std::vector<std::pair<size_t, size_t>> found;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    if (data == nullptr) return found;
    size_t pos = 0;
    std::optional<size_t> last_match_end;
    while (pos <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                           PCRE2_NO_UTF_CHECK, data, context_);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && rc != PCRE2_ERROR_MATCHLIMIT) {
        // The JIT's stack ran out: the interpreter keeps its frames on the heap.
        rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, context_);
      }
      if (rc < 0) break;
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
      const size_t begin = ovector[0], end = ovector[1];
      if (end < begin) break;  // \K tricks; not a usable match
      if (begin == end && last_match_end == end) {
        // Step over one character and search again.
        if (pos >= text.size()) break;
        char32_t c;
        pos += NextChar(text, pos, &c);
        continue;
      }
      found.emplace_back(begin, end);
      pos = end;
      last_match_end = end;
    }
    pcre2_match_data_free(data);
    return found;
  }

 private:
  static constexpr uint32_t kMatchLimit = 1'000'000;

  Regex(pcre2_code* code, pcre2_match_context* context) : code_(code), context_(context) {}
  pcre2_code* code_;
  pcre2_match_context* context_;  // read-only after construction
};

// Rust's char::is_alphanumeric: Alphabetic, or a number (Nd, Nl, No).
bool IsAlphanumeric(char32_t c) {
  static const std::shared_ptr<const Regex>* alphanumeric = [] {
    auto compiled = Regex::Compile(R"([\p{Alphabetic}\p{N}])", false);
    if (!compiled.ok()) std::abort();  // a fixed pattern PCRE2 10.40+ accepts
    return new std::shared_ptr<const Regex>(*std::move(compiled));
  }();
  std::string character;
  AppendUtf8(c, &character);
  return !(*alphanumeric)->FindAll(character).empty();
}

// ---------------------------------------------------------------------------
// The pipeline's parts.

// One piece of text on its way through pre-tokenization.
struct Piece {
  std::string text;
  bool at_text_start = false;  // starts at offset 0 of the whole input
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// tokenizers' SplitDelimiterBehavior over the matches of a pattern.
std::vector<std::pair<size_t, size_t>> SplitRanges(
    size_t size, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
    bool invert) {
  struct Range {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Range> ranges;
  if (size == 0) {
    ranges.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      if (prev != b) ranges.push_back({prev, b, false});
      ranges.push_back({b, e, true});
      prev = e;
    }
    if (prev != size) ranges.push_back({prev, size, false});
  }
  if (invert) {
    for (Range& r : ranges) r.is_match = !r.is_match;
  }
  std::vector<Range> out;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      out = ranges;
      break;
    case SplitBehavior::kRemoved:
      for (const Range& r : ranges) {
        if (!r.is_match) out.push_back(r);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Range& r : ranges) {
        if (r.is_match && !previous_match) {
          if (!out.empty()) {
            out.back().end = r.end;
          } else {
            out.push_back({r.begin, r.end, true});
          }
        } else {
          out.push_back({r.begin, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
        if (it->is_match && !previous_match) {
          if (!out.empty()) {
            out.back().begin = it->begin;
          } else {
            out.push_back({it->begin, it->end, true});
          }
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Range& r : ranges) {
        if (r.is_match == previous_match && !out.empty()) {
          out.back().end = r.end;
        } else {
          out.push_back({r.begin, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    }
  }
  std::vector<std::pair<size_t, size_t>> result;
  for (const Range& r : out) {
    if (r.end > r.begin) result.emplace_back(r.begin, r.end);
  }
  return result;
}

struct NormalizerStep {
  enum Kind { kNfc, kPrepend, kReplace } kind;
  std::string text;                     // Prepend: what; Replace: the content
  std::shared_ptr<const Regex> pattern;  // Replace
};

enum class PrependScheme { kFirst, kAlways, kNever };

struct PreTokenizerStep {
  enum Kind { kByteLevel, kSplit, kMetaspace } kind;
  // ByteLevel
  bool add_prefix_space = false;
  bool use_regex = false;
  // Split (and ByteLevel's regex)
  std::shared_ptr<const Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // Metaspace
  std::string replacement;
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

struct DecoderStep {
  enum Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip } kind;
  // Metaspace
  std::string replacement;
  PrependScheme prepend = PrependScheme::kAlways;
  // Replace
  std::shared_ptr<const Regex> pattern;
  std::string content;
  // Strip
  char32_t strip_char = ' ';
  size_t strip_start = 0, strip_stop = 0;
};

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// The text of a BPE word as symbols, merged pair by pair.
struct Symbol {
  int64_t id;
  int prev, next;
  size_t length;  // 0: merged into its left neighbour
};

uint64_t PairKey(int64_t a, int64_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// JSON helpers that name the file and the field path.
class JsonReader {
 public:
  explicit JsonReader(std::string file) : file_(std::move(file)) {}

  absl::Status Error(const std::string& path, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", path, ": ", problem));
  }

  absl::StatusOr<std::string> String(const json& object, const std::string& path,
                                     const char* field) const {
    const std::string full = Join(path, field);
    if (!object.contains(field)) return Error(full, "is missing");
    const json& value = object[field];
    if (!value.is_string()) {
      return Error(full, absl::StrCat("must be a string, not ", DescribeJson(value)));
    }
    return value.get<std::string>();
  }

  absl::StatusOr<std::optional<std::string>> OptionalString(const json& object,
                                                            const std::string& path,
                                                            const char* field) const {
    if (!object.contains(field) || object[field].is_null()) return std::optional<std::string>();
    ASSIGN_OR_RETURN(std::string s, String(object, path, field));
    return std::optional<std::string>(std::move(s));
  }

  absl::StatusOr<bool> Bool(const json& object, const std::string& path, const char* field,
                            bool fallback) const {
    if (!object.contains(field) || object[field].is_null()) return fallback;
    const json& value = object[field];
    if (!value.is_boolean()) {
      return Error(Join(path, field), absl::StrCat("must be true or false, not ", DescribeJson(value)));
    }
    return value.get<bool>();
  }

  absl::StatusOr<int64_t> Int(const json& object, const std::string& path, const char* field,
                              int64_t min, int64_t max, std::optional<int64_t> fallback) const {
    const std::string full = Join(path, field);
    if (!object.contains(field) || object[field].is_null()) {
      if (fallback.has_value()) return *fallback;
      return Error(full, "is missing");
    }
    return JsonToInt(object[field], file_, full, min, max);
  }

  // The object's "type" string.
  absl::StatusOr<std::string> Type(const json& object, const std::string& path) const {
    if (!object.is_object()) {
      return Error(path, absl::StrCat("must be an object, not ", DescribeJson(object)));
    }
    return String(object, path, "type");
  }

  absl::Status Unsupported(const std::string& path, const std::string& type) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": ", path, ".type \"", type,
                                                   "\" is not supported"));
  }

  static std::string Join(const std::string& path, const char* field) {
    return path.empty() ? std::string(field) : absl::StrCat(path, ".", field);
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// A Split/Replace "pattern": {"Regex": "..."} or {"String": "..."}.
absl::StatusOr<std::shared_ptr<const Regex>> ReadPattern(const JsonReader& reader,
                                                         const json& object,
                                                         const std::string& path) {
  const std::string full = JsonReader::Join(path, "pattern");
  if (!object.contains("pattern") || !object["pattern"].is_object()) {
    return reader.Error(full, "must be an object {\"Regex\": ...} or {\"String\": ...}");
  }
  const json& pattern = object["pattern"];
  const bool regex = pattern.contains("Regex");
  if (!regex && !pattern.contains("String")) {
    return reader.Error(full, "must hold \"Regex\" or \"String\"");
  }
  ASSIGN_OR_RETURN(std::string text, reader.String(pattern, full, regex ? "Regex" : "String"));
  if (!regex && text.empty()) return reader.Error(full + ".String", "must not be empty");
  absl::StatusOr<std::shared_ptr<const Regex>> compiled = Regex::Compile(text, !regex);
  if (!compiled.ok()) return reader.Error(full + (regex ? ".Regex" : ".String"), std::string(compiled.status().message()));
  return compiled;
}

absl::StatusOr<PrependScheme> ReadPrependScheme(const JsonReader& reader, const json& object,
                                                const std::string& path) {
  if (!object.contains("prepend_scheme")) {
    // Files older than prepend_scheme have add_prefix_space.
    ASSIGN_OR_RETURN(bool add, reader.Bool(object, path, "add_prefix_space", true));
    return add ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  ASSIGN_OR_RETURN(std::string scheme, reader.String(object, path, "prepend_scheme"));
  if (scheme == "first") return PrependScheme::kFirst;
  if (scheme == "always") return PrependScheme::kAlways;
  if (scheme == "never") return PrependScheme::kNever;
  return reader.Error(JsonReader::Join(path, "prepend_scheme"),
                      absl::StrCat("\"", scheme, "\" is not first, always or never"));
}

absl::StatusOr<std::string> ReadSingleChar(const JsonReader& reader, const json& object,
                                           const std::string& path, const char* field) {
  ASSIGN_OR_RETURN(std::string s, reader.String(object, path, field));
  char32_t c;
  if (s.empty() || NextChar(s, 0, &c) != s.size()) {
    return reader.Error(JsonReader::Join(path, field), "must be a single character");
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  std::vector<DecoderStep> decoders;
  bool has_decoder = false;

  // BPE
  absl::flat_hash_map<std::string, int64_t> vocab;
  absl::flat_hash_map<uint64_t, std::pair<int64_t, int64_t>> merges;  // pair -> (rank, new id)
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  int64_t byte_ids[256];  // <0xNN> ids, -1 when absent

  // Added tokens, and the tokens of every id.
  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, size_t> added_by_content;
  absl::flat_hash_map<int64_t, size_t> added_by_id;
  // Per first byte, the indexes into `added` of the raw / normalized tokens
  // (their matching content in raw_contents / normalized_contents).
  std::vector<size_t> raw_by_byte[256];
  std::vector<size_t> normalized_by_byte[256];
  std::vector<std::string> normalized_contents;
  // Tokens by id (ids need not be dense).
  absl::flat_hash_map<int64_t, std::string> id_to_token;
  int64_t size = 0;

  // Post-processing (single sequence).
  std::vector<int64_t> prefix_ids, suffix_ids;

  int64_t bos = -1, eos = -1, pad = -1, unk = -1;
  bool clean_up_spaces = false;
  // tokenizer_config.json's split_special_tokens: special tokens in the
  // text are not cut out (the match is skipped, as tokenizers does).
  bool split_special_tokens = false;

  std::string Normalize(std::string_view text) const;
  void PreTokenize(std::vector<Piece>* pieces) const;
  void Bpe(std::string_view word, std::vector<int64_t>* ids) const;
  void EncodeSegment(std::string_view segment, bool at_text_start, std::vector<int64_t>* ids) const;
  // tokenizers' AddedVocabulary::find_matches: (id or -1, begin, end).
  std::vector<std::tuple<int64_t, size_t, size_t>> FindAdded(std::string_view text,
                                                            bool normalized) const;
  std::string RunDecoders(std::vector<std::string> tokens) const;
};

std::string HfTokenizer::Impl::Normalize(std::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : normalizers) {
    switch (step.kind) {
      case NormalizerStep::kNfc:
        s = Nfc(s);
        break;
      case NormalizerStep::kPrepend:
        if (!s.empty()) s.insert(0, step.text);
        break;
      case NormalizerStep::kReplace: {
        const auto matches = step.pattern->FindAll(s);
        if (matches.empty()) break;
        std::string out;
        size_t prev = 0;
        for (const auto& [b, e] : matches) {
          out.append(s, prev, b - prev);
          out += step.text;
          prev = e;
        }
        out.append(s, prev, std::string::npos);
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

void HfTokenizer::Impl::PreTokenize(std::vector<Piece>* pieces) const {
  for (const PreTokenizerStep& step : pre_tokenizers) {
    std::vector<Piece> next;
    for (Piece& piece : *pieces) {
      switch (step.kind) {
        case PreTokenizerStep::kByteLevel: {
          if (step.add_prefix_space && !absl::StartsWith(piece.text, " ")) {
            piece.text.insert(0, " ");
          }
          std::vector<std::pair<size_t, size_t>> ranges;
          if (step.use_regex) {
            ranges = SplitRanges(piece.text.size(), step.pattern->FindAll(piece.text),
                                 SplitBehavior::kIsolated, false);
          } else if (!piece.text.empty()) {
            ranges.emplace_back(0, piece.text.size());
          }
          for (const auto& [b, e] : ranges) {
            Piece out;
            out.at_text_start = piece.at_text_start && b == 0;
            for (size_t i = b; i < e; ++i) {
              out.text += Bytes().byte_to_char[static_cast<uint8_t>(piece.text[i])];
            }
            next.push_back(std::move(out));
          }
          break;
        }
        case PreTokenizerStep::kSplit: {
          for (const auto& [b, e] : SplitRanges(piece.text.size(), step.pattern->FindAll(piece.text),
                                                step.behavior, step.invert)) {
            next.push_back({piece.text.substr(b, e - b), piece.at_text_start && b == 0});
          }
          break;
        }
        case PreTokenizerStep::kMetaspace: {
          std::string text = absl::StrReplaceAll(piece.text, {{" ", step.replacement}});
          const bool prepend = !absl::StartsWith(text, step.replacement) &&
                               (step.prepend == PrependScheme::kAlways ||
                                (step.prepend == PrependScheme::kFirst && piece.at_text_start));
          if (prepend) text.insert(0, step.replacement);
          if (!step.split) {
            if (!text.empty()) next.push_back({std::move(text), piece.at_text_start});
            break;
          }
          std::vector<std::pair<size_t, size_t>> matches;
          for (size_t at = text.find(step.replacement); at != std::string::npos;
               at = text.find(step.replacement, at + step.replacement.size())) {
            matches.emplace_back(at, at + step.replacement.size());
          }
          for (const auto& [b, e] :
               SplitRanges(text.size(), matches, SplitBehavior::kMergedWithNext, false)) {
            next.push_back({text.substr(b, e - b), piece.at_text_start && b == 0});
          }
          break;
        }
      }
    }
    *pieces = std::move(next);
  }
}

void HfTokenizer::Impl::Bpe(std::string_view word, std::vector<int64_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(Av(word));
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> symbols;
  auto add = [&symbols](int64_t id, size_t length) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, -1, length});
    if (index > 0) symbols[index - 1].next = index;
  };
  // Bytes of unknown text not yet emitted as unk_id (0: none).
  size_t pending_unk = 0;
  const int64_t unk_id = unk_token.has_value() ? vocab.at(*unk_token) : -1;
  size_t pos = 0;
  while (pos < word.size()) {
    char32_t c;
    const size_t length = NextChar(word, pos, &c);
    std::string s(word.substr(pos, length));
    if (pos > 0 && continuing_subword_prefix.has_value()) s = *continuing_subword_prefix + s;
    if (pos + length >= word.size() && end_of_word_suffix.has_value()) s += *end_of_word_suffix;
    pos += length;
    auto it = vocab.find(s);
    if (it != vocab.end()) {
      if (pending_unk > 0) {
        add(unk_id, pending_unk);
        pending_unk = 0;
      }
      add(it->second, length);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (char b : s) all &= byte_ids[static_cast<uint8_t>(b)] >= 0;
      if (all) {
        for (char b : s) add(byte_ids[static_cast<uint8_t>(b)], 1);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (pending_unk > 0 && fuse_unk) {
        pending_unk += length;
      } else {
        if (pending_unk > 0) add(unk_id, pending_unk);
        pending_unk = length;
      }
    }
  }
  if (pending_unk > 0) add(unk_id, pending_unk);

  // Merge the pair of lowest rank, leftmost first, until none is left.
  struct Candidate {
    int64_t rank;
    int pos;
    int64_t new_id;
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  auto push = [&](int left) {
    if (left < 0) return;
    const int right = symbols[left].next;
    if (right < 0) return;
    auto it = merges.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.length == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges.find(PairKey(left.id, right.id));
    if (it == merges.end() || it->second.second != top.new_id) continue;
    left.id = top.new_id;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    push(left.prev);
    push(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.length > 0) ids->push_back(s.id);
  }
}

std::vector<std::tuple<int64_t, size_t, size_t>> HfTokenizer::Impl::FindAdded(
    std::string_view text, bool normalized) const {
  std::vector<std::tuple<int64_t, size_t, size_t>> splits;
  const auto& buckets = normalized ? normalized_by_byte : raw_by_byte;
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost, then longest match.
    const std::vector<size_t>& bucket = buckets[static_cast<uint8_t>(text[pos])];
    size_t best = std::numeric_limits<size_t>::max();
    size_t best_length = 0;
    for (size_t index : bucket) {
      const std::string& content = normalized ? normalized_contents[index] : added[index].content;
      if (content.size() > best_length && text.substr(pos, content.size()) == content) {
        best = index;
        best_length = content.size();
      }
    }
    if (best_length == 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added[best];
    size_t start = pos, stop = pos + best_length;
    pos = stop;
    if (split_special_tokens && token.special) continue;
    if (token.single_word) {
      bool start_space = start == 0;
      if (!start_space) {
        char32_t c;
        NextChar(text, PrevCharStart(text, start), &c);
        start_space = !IsAlphanumeric(c);
      }
      bool stop_space = stop == text.size();
      if (!stop_space) {
        char32_t c;
        NextChar(text, stop, &c);
        stop_space = !IsAlphanumeric(c);
      }
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > 0) {
        const size_t prev = PrevCharStart(text, new_start);
        char32_t c;
        NextChar(text, prev, &c);
        if (!IsWhitespace(c)) break;
        new_start = prev;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        char32_t c;
        const size_t length = NextChar(text, stop, &c);
        if (!IsWhitespace(c)) break;
        stop += length;
      }
    }
    if (start_offset < start) splits.emplace_back(-1, start_offset, start);
    splits.emplace_back(token.id, start, stop);
    start_offset = stop;
  }
  if (start_offset < text.size()) splits.emplace_back(-1, start_offset, text.size());
  return splits;
}

void HfTokenizer::Impl::EncodeSegment(std::string_view segment, bool at_text_start,
                                      std::vector<int64_t>* ids) const {
  const std::string normalized = Normalize(segment);
  for (const auto& [id, b, e] : FindAdded(normalized, /*normalized=*/true)) {
    if (id >= 0) {
      ids->push_back(id);
      continue;
    }
    std::vector<Piece> pieces;
    pieces.push_back({normalized.substr(b, e - b), at_text_start && b == 0});
    PreTokenize(&pieces);
    for (const Piece& piece : pieces) Bpe(piece.text, ids);
  }
}

std::string HfTokenizer::Impl::RunDecoders(std::vector<std::string> tokens) const {
  if (!has_decoder) return absl::StrJoin(tokens, " ");
  for (const DecoderStep& step : decoders) {
    std::vector<std::string> next;
    switch (step.kind) {
      case DecoderStep::kByteLevel: {
        std::string bytes;
        for (const std::string& token : tokens) {
          std::string decoded;
          bool all = true;
          for (size_t pos = 0; pos < token.size();) {
            char32_t c;
            pos += NextChar(token, pos, &c);
            auto it = Bytes().char_to_byte.find(c);
            if (it == Bytes().char_to_byte.end()) {
              all = false;
              break;
            }
            decoded.push_back(static_cast<char>(it->second));
          }
          bytes += all ? decoded : token;
        }
        next.push_back(ToValidUtf8(bytes));
        break;
      }
      case DecoderStep::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string out;
          const std::string& token = tokens[i];
          for (size_t pos = 0; pos < token.size();) {
            if (token.compare(pos, step.replacement.size(), step.replacement) == 0) {
              if (!(i == 0 && step.prepend != PrependScheme::kNever)) out += ' ';
              pos += step.replacement.size();
            } else {
              char32_t c;
              const size_t length = NextChar(token, pos, &c);
              out.append(token, pos, length);
              pos += length;
            }
          }
          next.push_back(std::move(out));
        }
        break;
      case DecoderStep::kReplace:
        for (const std::string& token : tokens) {
          std::string out;
          size_t prev = 0;
          for (const auto& [b, e] : step.pattern->FindAll(token)) {
            out.append(token, prev, b - prev);
            out += step.content;
            prev = e;
          }
          out.append(token, prev, std::string::npos);
          next.push_back(std::move(out));
        }
        break;
      case DecoderStep::kByteFallback: {
        std::string pending;
        auto flush = [&]() {
          if (pending.empty()) return;
          size_t prefix;
          bool valid = true;
          for (size_t pos = 0; pos < pending.size();) {
            const size_t length = WellFormedLength(pending, pos, &prefix);
            if (length == 0) {
              valid = false;
              break;
            }
            pos += length;
          }
          if (valid) {
            next.push_back(pending);
          } else {
            for (size_t i = 0; i < pending.size(); ++i) next.emplace_back(kReplacementChar);
          }
          pending.clear();
        };
        for (const std::string& token : tokens) {
          int value = -1;
          if (token.size() == 6 && absl::StartsWith(token, "<0x") && token[5] == '>') {
            // Rust's u8::from_str_radix(.., 16): an optional '+', then hex digits.
            const std::string digits = token.substr(3, 2);
            auto hex = [](char ch) {
              if (ch >= '0' && ch <= '9') return ch - '0';
              if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
              if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
              return -1;
            };
            if (digits[0] == '+') {
              value = hex(digits[1]);
            } else if (hex(digits[0]) >= 0 && hex(digits[1]) >= 0) {
              value = hex(digits[0]) * 16 + hex(digits[1]);
            }
          }
          if (value >= 0) {
            pending.push_back(static_cast<char>(value));
          } else {
            flush();
            next.push_back(token);
          }
        }
        flush();
        break;
      }
      case DecoderStep::kFuse:
        next.push_back(absl::StrJoin(tokens, ""));
        break;
      case DecoderStep::kStrip:
        for (const std::string& token : tokens) {
          std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, char)
          for (size_t pos = 0; pos < token.size();) {
            char32_t c;
            const size_t length = NextChar(token, pos, &c);
            chars.emplace_back(pos, c);
            pos += length;
          }
          size_t start_cut = 0;
          while (start_cut < step.strip_start && start_cut < chars.size() &&
                 chars[start_cut].second == step.strip_char) {
            ++start_cut;
          }
          size_t stop_cut = 0;
          while (stop_cut < step.strip_stop && stop_cut < chars.size() - start_cut &&
                 chars[chars.size() - 1 - stop_cut].second == step.strip_char) {
            ++stop_cut;
          }
          const size_t begin = start_cut < chars.size() ? chars[start_cut].first : token.size();
          const size_t end =
              stop_cut > 0 ? chars[chars.size() - stop_cut].first : token.size();
          next.push_back(end > begin ? token.substr(begin, end - begin) : std::string());
        }
        break;
    }
    tokens = std::move(next);
  }
  return absl::StrJoin(tokens, "");
}

// ---------------------------------------------------------------------------
// Loading.

namespace {

// Which transformers class AutoTokenizer builds for the folder; the
// classes with their own __init__ rebuild parts of the pipeline.
enum class TokenizerClass { kAsFile, kLlama, kQwen2, kGpt2, kGemma };

// The SentencePiece-style decoder transformers' LlamaTokenizer and
// GemmaTokenizer build: ▁ back to a space, <0xNN> tokens to bytes, fused.
absl::Status AddSentencePieceDecoders(std::vector<DecoderStep>& decoders) {
  DecoderStep replace;
  replace.kind = DecoderStep::kReplace;
  ASSIGN_OR_RETURN(replace.pattern, Regex::Compile(std::string(kMetaSpace), true));
  replace.content = " ";
  decoders.push_back(replace);
  decoders.push_back({DecoderStep::kByteFallback});
  decoders.push_back({DecoderStep::kFuse});
  return absl::OkStatus();
}

absl::Status ReadNormalizer(const JsonReader& reader, const json& node, const std::string& path,
                            std::vector<NormalizerStep>* out) {
  if (node.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, reader.Type(node, path));
  if (type == "Sequence") {
    if (!node.contains("normalizers") || !node["normalizers"].is_array()) {
      return reader.Error(path + ".normalizers", "must be an array");
    }
    for (size_t i = 0; i < node["normalizers"].size(); ++i) {
      RETURN_IF_ERROR(ReadNormalizer(reader, node["normalizers"][i],
                                     absl::StrCat(path, ".normalizers[", i, "]"), out));
    }
    return absl::OkStatus();
  }
  if (type == "NFC") {
    out->push_back({NormalizerStep::kNfc, "", nullptr});
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prepend, reader.String(node, path, "prepend"));
    out->push_back({NormalizerStep::kPrepend, prepend, nullptr});
    return absl::OkStatus();
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(std::shared_ptr<const Regex> pattern, ReadPattern(reader, node, path));
    ASSIGN_OR_RETURN(std::string content, reader.String(node, path, "content"));
    out->push_back({NormalizerStep::kReplace, content, pattern});
    return absl::OkStatus();
  }
  return reader.Unsupported(path, type);
}

absl::StatusOr<SplitBehavior> ReadBehavior(const JsonReader& reader, const json& node,
                                           const std::string& path) {
  ASSIGN_OR_RETURN(std::string behavior, reader.String(node, path, "behavior"));
  if (behavior == "Isolated") return SplitBehavior::kIsolated;
  if (behavior == "Removed") return SplitBehavior::kRemoved;
  if (behavior == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (behavior == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (behavior == "Contiguous") return SplitBehavior::kContiguous;
  return reader.Error(path + ".behavior", absl::StrCat("\"", behavior, "\" is not supported"));
}

absl::Status ReadPreTokenizer(const JsonReader& reader, const json& node, const std::string& path,
                              std::vector<PreTokenizerStep>* out) {
  if (node.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, reader.Type(node, path));
  PreTokenizerStep step;
  if (type == "Sequence") {
    if (!node.contains("pretokenizers") || !node["pretokenizers"].is_array()) {
      return reader.Error(path + ".pretokenizers", "must be an array");
    }
    for (size_t i = 0; i < node["pretokenizers"].size(); ++i) {
      RETURN_IF_ERROR(ReadPreTokenizer(reader, node["pretokenizers"][i],
                                       absl::StrCat(path, ".pretokenizers[", i, "]"), out));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::kByteLevel;
    ASSIGN_OR_RETURN(step.add_prefix_space, reader.Bool(node, path, "add_prefix_space", true));
    ASSIGN_OR_RETURN(step.use_regex, reader.Bool(node, path, "use_regex", true));
    if (step.use_regex) {
      ASSIGN_OR_RETURN(step.pattern, Regex::Compile(kGpt2Pattern, false));
    }
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::kSplit;
    ASSIGN_OR_RETURN(step.pattern, ReadPattern(reader, node, path));
    ASSIGN_OR_RETURN(step.behavior, ReadBehavior(reader, node, path));
    ASSIGN_OR_RETURN(step.invert, reader.Bool(node, path, "invert", false));
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::kMetaspace;
    ASSIGN_OR_RETURN(step.replacement, ReadSingleChar(reader, node, path, "replacement"));
    ASSIGN_OR_RETURN(step.prepend, ReadPrependScheme(reader, node, path));
    ASSIGN_OR_RETURN(step.split, reader.Bool(node, path, "split", true));
  } else {
    return reader.Unsupported(path, type);
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ReadDecoder(const JsonReader& reader, const json& node, const std::string& path,
                         std::vector<DecoderStep>* out) {
  if (node.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, reader.Type(node, path));
  DecoderStep step;
  if (type == "Sequence") {
    if (!node.contains("decoders") || !node["decoders"].is_array()) {
      return reader.Error(path + ".decoders", "must be an array");
    }
    for (size_t i = 0; i < node["decoders"].size(); ++i) {
      RETURN_IF_ERROR(ReadDecoder(reader, node["decoders"][i],
                                  absl::StrCat(path, ".decoders[", i, "]"), out));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    step.kind = DecoderStep::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::kMetaspace;
    ASSIGN_OR_RETURN(step.replacement, ReadSingleChar(reader, node, path, "replacement"));
    ASSIGN_OR_RETURN(step.prepend, ReadPrependScheme(reader, node, path));
  } else if (type == "Replace") {
    step.kind = DecoderStep::kReplace;
    ASSIGN_OR_RETURN(step.pattern, ReadPattern(reader, node, path));
    ASSIGN_OR_RETURN(step.content, reader.String(node, path, "content"));
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::kStrip;
    ASSIGN_OR_RETURN(std::string content, ReadSingleChar(reader, node, path, "content"));
    NextChar(content, 0, &step.strip_char);
    ASSIGN_OR_RETURN(int64_t start, reader.Int(node, path, "start", 0, 1 << 20, std::nullopt));
    ASSIGN_OR_RETURN(int64_t stop, reader.Int(node, path, "stop", 0, 1 << 20, std::nullopt));
    step.strip_start = static_cast<size_t>(start);
    step.strip_stop = static_cast<size_t>(stop);
  } else {
    return reader.Unsupported(path, type);
  }
  out->push_back(std::move(step));
  return absl::OkStatus();
}

// TemplateProcessing's single-sequence template: the ids before and after $A.
absl::Status ReadPostProcessor(const JsonReader& reader, const json& node, const std::string& path,
                               std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) {
  if (node.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, reader.Type(node, path));
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    if (!node.contains("processors") || !node["processors"].is_array()) {
      return reader.Error(path + ".processors", "must be an array");
    }
    for (size_t i = 0; i < node["processors"].size(); ++i) {
      RETURN_IF_ERROR(ReadPostProcessor(reader, node["processors"][i],
                                        absl::StrCat(path, ".processors[", i, "]"), prefix, suffix));
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") return reader.Unsupported(path, type);
  const std::string single_path = path + ".single";
  if (!node.contains("single") || !node["single"].is_array()) {
    return reader.Error(single_path, "must be an array");
  }
  const json& special = node.contains("special_tokens") ? node["special_tokens"] : json::object();
  if (!special.is_object()) return reader.Error(path + ".special_tokens", "must be an object");
  std::vector<int64_t> before, after;
  bool seen_sequence = false;
  for (size_t i = 0; i < node["single"].size(); ++i) {
    const json& item = node["single"][i];
    const std::string item_path = absl::StrCat(single_path, "[", i, "]");
    if (item.is_object() && item.contains("Sequence")) {
      if (seen_sequence) return reader.Error(item_path, "a second Sequence in the single template");
      seen_sequence = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken") || !item["SpecialToken"].is_object()) {
      return reader.Error(item_path, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
    ASSIGN_OR_RETURN(std::string name, reader.String(item["SpecialToken"], item_path + ".SpecialToken", "id"));
    const std::string token_path = absl::StrCat(path, ".special_tokens[\"", name, "\"]");
    if (!special.contains(name) || !special[name].is_object() || !special[name].contains("ids") ||
        !special[name]["ids"].is_array()) {
      return reader.Error(token_path, "is missing or has no \"ids\" array");
    }
    for (size_t k = 0; k < special[name]["ids"].size(); ++k) {
      ASSIGN_OR_RETURN(int64_t id, JsonToInt(special[name]["ids"][k], reader.file(),
                                             absl::StrCat(token_path, ".ids[", k, "]"), 0,
                                             kMaxTokenId));
      (seen_sequence ? after : before).push_back(id);
    }
  }
  if (!seen_sequence) return reader.Error(single_path, "has no Sequence");
  // A later processor in a Sequence replaces the template of an earlier one.
  *prefix = std::move(before);
  *suffix = std::move(after);
  return absl::OkStatus();
}

// A token in tokenizer_config.json: a string, or an AddedToken object
// ({"content": ..., "lstrip": ..., "special": ...}). Named and extra special
// tokens are special whatever the object says.
absl::StatusOr<AddedToken> ReadConfigToken(const JsonReader& reader, const json& value,
                                           const std::string& path, bool force_special) {
  AddedToken token;
  if (value.is_string()) {
    token.content = value.get<std::string>();
    token.special = true;
    return token;
  }
  if (!value.is_object()) {
    return reader.Error(path, absl::StrCat("must be a string or an object, not ", DescribeJson(value)));
  }
  ASSIGN_OR_RETURN(token.content, reader.String(value, path, "content"));
  ASSIGN_OR_RETURN(token.special, reader.Bool(value, path, "special", force_special));
  if (force_special) token.special = true;
  ASSIGN_OR_RETURN(token.lstrip, reader.Bool(value, path, "lstrip", false));
  ASSIGN_OR_RETURN(token.rstrip, reader.Bool(value, path, "rstrip", false));
  ASSIGN_OR_RETURN(token.single_word, reader.Bool(value, path, "single_word", false));
  ASSIGN_OR_RETURN(token.normalized, reader.Bool(value, path, "normalized", !token.special));
  return token;
}

absl::StatusOr<json> ParseObject(std::string_view text, const std::string& what) {
  ASSIGN_OR_RETURN(json doc, ParseJson(Av(text), what));
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(what, ": the top level must be a JSON object"));
  return doc;
}

// AutoTokenizer's choice of class (transformers 5): see LoadFromJson.
absl::StatusOr<TokenizerClass> ResolveClass(const std::optional<std::string>& hub_class,
                                            const std::optional<std::string>& model_type,
                                            bool byte_level_json, const JsonReader& config_reader) {
  auto strip_fast = [](std::string name) {
    if (absl::EndsWith(name, "Fast")) name.resize(name.size() - 4);
    return name;
  };
  // The model types of the families here whose registered class differs
  // from the hub's: Qwen 2 / 3 always get Qwen2Tokenizer (transformers
  // lists qwen2 among the models whose hub class is wrong); Mistral's get
  // the tokenizer.json as it is (without the mistral-common package).
  std::optional<std::string> registered;
  bool hub_class_is_wrong = false;
  if (model_type.has_value()) {
    const std::string& t = *model_type;
    if (t == "qwen2" || t == "qwen2_moe" || t == "qwen3" || t == "qwen3_moe") {
      registered = "Qwen2Tokenizer";
      hub_class_is_wrong = t == "qwen2";
    } else if (t == "gpt2") {
      registered = "GPT2Tokenizer";
    } else if (t == "gemma" || t == "gemma2" || t == "gemma3" || t == "gemma3_text") {
      registered = "GemmaTokenizer";
    } else if (t == "mistral" || t == "mixtral" || t == "ministral" || t == "mistral3" ||
               t == "phi3") {
      registered = "TokenizersBackend";
      hub_class_is_wrong = t == "phi3";
    }
  }
  std::string name;
  if (hub_class.has_value()) {
    name = strip_fast(*hub_class);
    if (name == "LlamaTokenizer" && byte_level_json && !hub_class_is_wrong) {
      name = "TokenizersBackend";  // a byte-level tokenizer.json under Llama's name
    } else if (registered.has_value() && *registered != name) {
      name = *registered == "TokenizersBackend" ? "TokenizersBackend"
             : hub_class_is_wrong               ? *registered
                                                : name;
    }
  } else if (registered.has_value()) {
    name = *registered;
  } else {
    name = "TokenizersBackend";
  }
  if (name == "LlamaTokenizer") return TokenizerClass::kLlama;
  if (name == "Qwen2Tokenizer") return TokenizerClass::kQwen2;
  if (name == "GPT2Tokenizer") return TokenizerClass::kGpt2;
  if (name == "GemmaTokenizer") return TokenizerClass::kGemma;
  if (name == "PreTrainedTokenizer" || name == "TokenizersBackend") return TokenizerClass::kAsFile;
  return config_reader.Error(
      "tokenizer_class",
      absl::StrCat("\"", hub_class.value_or(name), "\" is not supported (supported: "
                   "PreTrainedTokenizerFast, TokenizersBackend, LlamaTokenizer, "
                   "Qwen2Tokenizer, GPT2Tokenizer, GemmaTokenizer and their Fast names)"));
}

}  // namespace

HfTokenizer::HfTokenizer(std::string source, std::unique_ptr<const Impl> impl)
    : source_(std::move(source)), impl_(std::move(impl)) {}

HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& folder) {
  struct stat st;
  if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(folder, ": no such folder (expected a Hugging Face model folder with tokenizer.json)"));
  }
  const std::string base = absl::StrCat(folder, absl::EndsWith(folder, "/") ? "" : "/");
  const std::string tokenizer_path = base + "tokenizer.json";
  if (::stat(tokenizer_path.c_str(), &st) != 0) {
    if (::stat((base + "tokenizer.model").c_str(), &st) == 0) {
      return absl::NotFoundError(absl::StrCat(
          tokenizer_path, ": no such file; the folder has only a SentencePiece tokenizer.model, "
          "which is not supported: save the tokenizer with transformers to get tokenizer.json"));
    }
    return absl::NotFoundError(absl::StrCat(tokenizer_path, ": no such file"));
  }
  ASSIGN_OR_RETURN(std::string tokenizer_json, ReadFile(tokenizer_path));
  std::string config_json, map_json, model_config_json;
  for (auto [name, out] : {std::make_pair("tokenizer_config.json", &config_json),
                           std::make_pair("special_tokens_map.json", &map_json),
                           std::make_pair("config.json", &model_config_json)}) {
    const std::string path = base + name;
    if (::stat(path.c_str(), &st) != 0) continue;
    ASSIGN_OR_RETURN(*out, ReadFile(path));
    if (out->empty()) *out = "{}";
  }
  return LoadFromJson(tokenizer_json, config_json, map_json, folder, model_config_json);
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::LoadFromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json,
    std::string_view special_tokens_map_json, const std::string& what,
    std::string_view config_json) {
  const std::string base = absl::StrCat(what, absl::EndsWith(what, "/") ? "" : "/");
  const JsonReader reader(base + "tokenizer.json");
  const JsonReader config_reader(base + "tokenizer_config.json");
  const JsonReader map_reader(base + "special_tokens_map.json");
  ASSIGN_OR_RETURN(json doc, ParseObject(tokenizer_json, reader.file()));
  json config = json::object(), token_map = json::object();
  if (!tokenizer_config_json.empty()) {
    ASSIGN_OR_RETURN(config, ParseObject(tokenizer_config_json, config_reader.file()));
  }
  if (!special_tokens_map_json.empty()) {
    ASSIGN_OR_RETURN(token_map, ParseObject(special_tokens_map_json, map_reader.file()));
  }

  // Which class transformers' AutoTokenizer builds: tokenizer_config.json's
  // (or config.json's) tokenizer_class, corrected by config.json's
  // model_type as AutoTokenizer does.
  json model_config = json::object();
  const JsonReader model_config_reader(base + "config.json");
  if (!config_json.empty()) {
    ASSIGN_OR_RETURN(model_config, ParseObject(config_json, model_config_reader.file()));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> hub_class,
                   config_reader.OptionalString(config, "", "tokenizer_class"));
  if (!hub_class.has_value()) {
    ASSIGN_OR_RETURN(hub_class, model_config_reader.OptionalString(model_config, "", "tokenizer_class"));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> model_type,
                   model_config_reader.OptionalString(model_config, "", "model_type"));
  ASSIGN_OR_RETURN(bool fix_mistral_regex, config_reader.Bool(config, "", "fix_mistral_regex", false));
  if (fix_mistral_regex) {
    return config_reader.Error("fix_mistral_regex", "true is not supported");
  }
  ASSIGN_OR_RETURN(TokenizerClass cls,
                   ResolveClass(hub_class, model_type,
                                Av(tokenizer_json).find("\"ByteLevel\"") != absl::string_view::npos,
                                config_reader));

  auto impl = std::make_unique<Impl>();
  if (doc.contains("truncation") && !doc["truncation"].is_null()) {
    return reader.Error("truncation", "must be null (truncation is not supported)");
  }

  // The model.
  if (!doc.contains("model") || !doc["model"].is_object()) {
    return reader.Error("model", "must be an object");
  }
  const json& model = doc["model"];
  std::string bpe_type = "BPE";
  if (model.contains("type")) {
    ASSIGN_OR_RETURN(bpe_type, reader.String(model, "model", "type"));
  }
  if (bpe_type != "BPE") return reader.Unsupported("model", bpe_type);
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    ASSIGN_OR_RETURN(double dropout, JsonToDouble(model["dropout"], reader.file(), "model.dropout", 0, 1));
    if (dropout != 0) return reader.Error("model.dropout", "must be null or 0 (BPE dropout is random)");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return reader.Error("model.vocab", "must be an object of token -> id");
  }
  int64_t max_id = -1;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    ASSIGN_OR_RETURN(int64_t id, JsonToInt(it.value(), reader.file(),
                                           absl::StrCat("model.vocab[\"", it.key().substr(0, 40), "\"]"),
                                           0, kMaxTokenId));
    impl->vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return reader.Error("model.merges", "must be an array");
  }
  if (cls == TokenizerClass::kAsFile) {
    ASSIGN_OR_RETURN(impl->unk_token, reader.OptionalString(model, "model", "unk_token"));
    ASSIGN_OR_RETURN(impl->continuing_subword_prefix,
                     reader.OptionalString(model, "model", "continuing_subword_prefix"));
    ASSIGN_OR_RETURN(impl->end_of_word_suffix, reader.OptionalString(model, "model", "end_of_word_suffix"));
    ASSIGN_OR_RETURN(impl->fuse_unk, reader.Bool(model, "model", "fuse_unk", false));
    ASSIGN_OR_RETURN(impl->byte_fallback, reader.Bool(model, "model", "byte_fallback", false));
    ASSIGN_OR_RETURN(impl->ignore_merges, reader.Bool(model, "model", "ignore_merges", false));
  } else if (cls == TokenizerClass::kLlama || cls == TokenizerClass::kGemma) {
    impl->fuse_unk = true;
    impl->byte_fallback = true;
  } else if (cls == TokenizerClass::kQwen2 || cls == TokenizerClass::kGpt2) {
    impl->continuing_subword_prefix = "";
    impl->end_of_word_suffix = "";
  }
  if (impl->unk_token.has_value() && !impl->vocab.contains(*impl->unk_token)) {
    return reader.Error("model.unk_token", absl::StrCat("\"", impl->unk_token->substr(0, 40),
                                                        "\" is not in model.vocab"));
  }
  const size_t prefix_length =
      impl->continuing_subword_prefix.has_value() ? impl->continuing_subword_prefix->size() : 0;
  const json& merges = model["merges"];
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& merge = merges[rank];
    const std::string path = absl::StrCat("model.merges[", rank, "]");
    std::string a, b;
    if (merge.is_string()) {
      std::vector<std::string> parts = absl::StrSplit(merge.get<std::string>(), ' ');
      if (parts.size() != 2) return reader.Error(path, "must be two tokens separated by one space");
      a = std::move(parts[0]);
      b = std::move(parts[1]);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return reader.Error(path, "must be \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = impl->vocab.find(a);
    auto ib = impl->vocab.find(b);
    if (ia == impl->vocab.end() || ib == impl->vocab.end()) {
      return reader.Error(path, absl::StrCat("token \"", (ia == impl->vocab.end() ? a : b).substr(0, 40),
                                             "\" is not in model.vocab"));
    }
    const std::string merged = a + (b.size() >= prefix_length ? b.substr(prefix_length) : std::string());
    auto im = impl->vocab.find(merged);
    if (im == impl->vocab.end()) {
      return reader.Error(path, absl::StrCat("the merged token \"", merged.substr(0, 40),
                                             "\" is not in model.vocab"));
    }
    impl->merges[PairKey(ia->second, ib->second)] = {static_cast<int64_t>(rank), im->second};
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = impl->vocab.find(name);
    impl->byte_ids[b] = it == impl->vocab.end() ? -1 : it->second;
  }

  // Normalizer, pre-tokenizer, decoder.
  ASSIGN_OR_RETURN(bool add_prefix_space_set, config_reader.Bool(config, "", "add_prefix_space", false));
  const bool has_add_prefix_space = config.contains("add_prefix_space") && !config["add_prefix_space"].is_null();
  switch (cls) {
    case TokenizerClass::kAsFile:
      RETURN_IF_ERROR(ReadNormalizer(reader, doc.value("normalizer", json()), "normalizer", &impl->normalizers));
      RETURN_IF_ERROR(ReadPreTokenizer(reader, doc.value("pre_tokenizer", json()), "pre_tokenizer",
                                       &impl->pre_tokenizers));
      RETURN_IF_ERROR(ReadDecoder(reader, doc.value("decoder", json()), "decoder", &impl->decoders));
      impl->has_decoder = doc.contains("decoder") && !doc["decoder"].is_null();
      break;
    case TokenizerClass::kLlama: {
      const bool add_prefix_space = has_add_prefix_space ? add_prefix_space_set : true;
      ASSIGN_OR_RETURN(bool legacy, config_reader.Bool(config, "", "legacy", false));
      PreTokenizerStep meta;
      meta.kind = PreTokenizerStep::kMetaspace;
      meta.replacement = std::string(kMetaSpace);
      meta.prepend = !add_prefix_space ? PrependScheme::kNever
                                       : (legacy ? PrependScheme::kAlways : PrependScheme::kFirst);
      meta.split = false;
      impl->pre_tokenizers.push_back(meta);
      RETURN_IF_ERROR(AddSentencePieceDecoders(impl->decoders));
      if (add_prefix_space) {
        DecoderStep strip;
        strip.kind = DecoderStep::kStrip;
        strip.strip_char = ' ';
        strip.strip_start = 1;
        impl->decoders.push_back(strip);
      }
      impl->has_decoder = true;
      break;
    }
    case TokenizerClass::kGemma: {
      // transformers' GemmaTokenizer: spaces become ▁ (no prefix one), a
      // Split on " " that then finds none, and the SentencePiece decoder
      // without Llama's strip of a leading space.
      NormalizerStep replace_space{NormalizerStep::kReplace, std::string(kMetaSpace), nullptr};
      ASSIGN_OR_RETURN(replace_space.pattern, Regex::Compile(" ", true));
      impl->normalizers.push_back(replace_space);
      PreTokenizerStep split;
      split.kind = PreTokenizerStep::kSplit;
      ASSIGN_OR_RETURN(split.pattern, Regex::Compile(" ", true));
      split.behavior = SplitBehavior::kMergedWithPrevious;
      impl->pre_tokenizers.push_back(split);
      RETURN_IF_ERROR(AddSentencePieceDecoders(impl->decoders));
      impl->has_decoder = true;
      break;
    }
    case TokenizerClass::kQwen2: {
      impl->normalizers.push_back({NormalizerStep::kNfc, "", nullptr});
      PreTokenizerStep split;
      split.kind = PreTokenizerStep::kSplit;
      ASSIGN_OR_RETURN(split.pattern, Regex::Compile(kQwen2Pattern, false));
      impl->pre_tokenizers.push_back(split);
      PreTokenizerStep bytes;
      bytes.kind = PreTokenizerStep::kByteLevel;
      bytes.add_prefix_space = add_prefix_space_set;
      bytes.use_regex = false;
      impl->pre_tokenizers.push_back(bytes);
      impl->decoders.push_back({DecoderStep::kByteLevel});
      impl->has_decoder = true;
      break;
    }
    case TokenizerClass::kGpt2: {
      PreTokenizerStep bytes;
      bytes.kind = PreTokenizerStep::kByteLevel;
      bytes.add_prefix_space = add_prefix_space_set;
      bytes.use_regex = true;
      ASSIGN_OR_RETURN(bytes.pattern, Regex::Compile(kGpt2Pattern, false));
      impl->pre_tokenizers.push_back(bytes);
      impl->decoders.push_back({DecoderStep::kByteLevel});
      impl->has_decoder = true;
      break;
    }
  }

  // transformers 5 takes BOS / EOS from tokenizer.json's post_processor
  // (tokenizer_config.json's add_bos_token / add_eos_token are dropped when
  // tokenizer.json exists).
  RETURN_IF_ERROR(ReadPostProcessor(reader, doc.value("post_processor", json()), "post_processor",
                                    &impl->prefix_ids, &impl->suffix_ids));

  // Added tokens.
  if (doc.contains("added_tokens") && !doc["added_tokens"].is_null()) {
    if (!doc["added_tokens"].is_array()) return reader.Error("added_tokens", "must be an array");
    const json& tokens = doc["added_tokens"];
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string path = absl::StrCat("added_tokens[", i, "]");
      const json& t = tokens[i];
      if (!t.is_object()) return reader.Error(path, "must be an object");
      AddedToken token;
      ASSIGN_OR_RETURN(token.id, reader.Int(t, path, "id", 0, kMaxTokenId, std::nullopt));
      ASSIGN_OR_RETURN(token.content, reader.String(t, path, "content"));
      if (token.content.empty()) return reader.Error(path + ".content", "must not be empty");
      ASSIGN_OR_RETURN(token.special, reader.Bool(t, path, "special", false));
      ASSIGN_OR_RETURN(token.lstrip, reader.Bool(t, path, "lstrip", false));
      ASSIGN_OR_RETURN(token.rstrip, reader.Bool(t, path, "rstrip", false));
      ASSIGN_OR_RETURN(token.single_word, reader.Bool(t, path, "single_word", false));
      ASSIGN_OR_RETURN(token.normalized, reader.Bool(t, path, "normalized", !token.special));
      if (impl->added_by_content.contains(token.content)) continue;
      impl->added_by_content[token.content] = impl->added.size();
      impl->added_by_id[token.id] = impl->added.size();
      max_id = std::max(max_id, token.id);
      impl->added.push_back(std::move(token));
    }
  }

  // Tokens transformers adds to the file's, in its order: the entries of
  // tokenizer_config.json's added_tokens_decoder (by id), the named special
  // tokens, then extra_special_tokens / additional_special_tokens. A token
  // that is already an added token keeps its id and flags; one in the
  // vocabulary takes its id there; any other goes after the last id.
  auto add_token = [&](AddedToken token) -> int64_t {
    if (token.content.empty()) return -1;  // an empty token could match nothing
    auto existing = impl->added_by_content.find(token.content);
    if (existing != impl->added_by_content.end()) return impl->added[existing->second].id;
    auto in_vocab = impl->vocab.find(token.content);
    token.id = in_vocab != impl->vocab.end() ? in_vocab->second : max_id + 1;
    max_id = std::max(max_id, token.id);
    impl->added_by_content[token.content] = impl->added.size();
    impl->added_by_id[token.id] = impl->added.size();
    impl->added.push_back(std::move(token));
    return impl->added.back().id;
  };
  if (config.contains("added_tokens_decoder") && !config["added_tokens_decoder"].is_null()) {
    const json& decoder = config["added_tokens_decoder"];
    if (!decoder.is_object()) return config_reader.Error("added_tokens_decoder", "must be an object");
    std::vector<std::pair<int64_t, std::string>> order;
    for (auto it = decoder.begin(); it != decoder.end(); ++it) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(it.key(), &id)) {
        return config_reader.Error(absl::StrCat("added_tokens_decoder[\"", it.key().substr(0, 20), "\"]"),
                                   "the key must be an id");
      }
      order.emplace_back(id, it.key());
    }
    std::sort(order.begin(), order.end());
    for (const auto& [id, key] : order) {
      const std::string path = absl::StrCat("added_tokens_decoder[\"", key, "\"]");
      ASSIGN_OR_RETURN(AddedToken token, ReadConfigToken(config_reader, decoder[key], path, false));
      add_token(std::move(token));
    }
  }
  // special_tokens_map.json overrides tokenizer_config.json unless the
  // latter has added_tokens_decoder.
  const bool map_applies = !config.contains("added_tokens_decoder");
  struct Named {
    const char* field;
    int64_t* id;
    const char* llama_default;
    const char* qwen2_default;
    const char* gpt2_default;
    const char* gemma_default;
  };
  int64_t ignored_id = -1;
  const Named named[] = {
      {"bos_token", &impl->bos, "<s>", nullptr, "<|endoftext|>", "<bos>"},
      {"eos_token", &impl->eos, "</s>", "<|endoftext|>", "<|endoftext|>", "<eos>"},
      {"unk_token", &impl->unk, "<unk>", "<|endoftext|>", "<|endoftext|>", "<unk>"},
      {"sep_token", &ignored_id, nullptr, nullptr, nullptr, nullptr},
      {"pad_token", &impl->pad, nullptr, "<|endoftext|>", nullptr, "<pad>"},
      {"cls_token", &ignored_id, nullptr, nullptr, nullptr, nullptr},
      {"mask_token", &ignored_id, nullptr, nullptr, nullptr, "<mask>"},
  };
  for (const Named& n : named) {
    const bool in_map = map_applies && token_map.contains(n.field) && !token_map[n.field].is_null();
    const json& source = in_map ? token_map : config;
    const JsonReader& source_reader = in_map ? map_reader : config_reader;
    std::optional<AddedToken> token;
    if (source.contains(n.field) && !source[n.field].is_null()) {
      ASSIGN_OR_RETURN(AddedToken t, ReadConfigToken(source_reader, source[n.field], n.field, true));
      token = std::move(t);
    } else if (!config.contains(n.field) && !(map_applies && token_map.contains(n.field))) {
      // The class's own default, for a key the files do not state.
      const char* fallback = cls == TokenizerClass::kLlama   ? n.llama_default
                             : cls == TokenizerClass::kQwen2 ? n.qwen2_default
                             : cls == TokenizerClass::kGpt2  ? n.gpt2_default
                             : cls == TokenizerClass::kGemma ? n.gemma_default
                                                             : nullptr;
      if (fallback != nullptr) {
        token = AddedToken();
        token->content = fallback;
        token->special = true;
      }
    }
    if (!token.has_value() || token->content.empty()) continue;
    *n.id = add_token(std::move(*token));
  }
  for (const char* field : {"extra_special_tokens", "additional_special_tokens"}) {
    if (!config.contains(field) || config[field].is_null()) continue;
    const json& list = config[field];
    if (list.is_object()) continue;  // model-specific names; their tokens are in the file
    if (!list.is_array()) return config_reader.Error(field, "must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      ASSIGN_OR_RETURN(AddedToken token, ReadConfigToken(config_reader, list[i],
                                                         absl::StrCat(field, "[", i, "]"), true));
      add_token(std::move(token));
    }
  }
  ASSIGN_OR_RETURN(bool force_cleanup,
                   config_reader.Bool(config, "", "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", false));
  ASSIGN_OR_RETURN(bool cleanup, config_reader.Bool(config, "", "clean_up_tokenization_spaces", false));
  impl->clean_up_spaces = cleanup && force_cleanup;
  ASSIGN_OR_RETURN(impl->split_special_tokens,
                   config_reader.Bool(config, "", "split_special_tokens", false));

  // Matching tables of the added tokens.
  impl->normalized_contents.resize(impl->added.size());
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& token = impl->added[i];
    if (token.normalized) {
      impl->normalized_contents[i] = impl->Normalize(token.content);
      if (!impl->normalized_contents[i].empty()) {
        impl->normalized_by_byte[static_cast<uint8_t>(impl->normalized_contents[i][0])].push_back(i);
      }
    } else {
      impl->raw_by_byte[static_cast<uint8_t>(token.content[0])].push_back(i);
    }
  }
  impl->size = max_id + 1;
  for (const auto& [token, id] : impl->vocab) impl->id_to_token[id] = token;
  for (const AddedToken& token : impl->added) impl->id_to_token[token.id] = token.content;
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(what, std::move(impl)));
}

// ---------------------------------------------------------------------------

std::vector<int64_t> HfTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  const std::string valid = ToValidUtf8(text);
  std::vector<int64_t> ids;
  if (add_special_tokens) ids = impl_->prefix_ids;
  for (const auto& [id, b, e] : impl_->FindAdded(valid, /*normalized=*/false)) {
    if (id >= 0) {
      ids.push_back(id);
    } else {
      impl_->EncodeSegment(std::string_view(valid).substr(b, e - b), b == 0, &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string HfTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    if (id < 0 || id >= impl_->size) continue;
    auto added = impl_->added_by_id.find(id);
    if (added != impl_->added_by_id.end()) {
      if (skip_special_tokens && impl_->added[added->second].special) continue;
      tokens.push_back(impl_->added[added->second].content);
      continue;
    }
    auto token = impl_->id_to_token.find(id);
    if (token == impl_->id_to_token.end()) continue;
    tokens.push_back(token->second);
  }
  std::string text = impl_->RunDecoders(std::move(tokens));
  if (impl_->clean_up_spaces) {
    text = absl::StrReplaceAll(text, {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","},
                                      {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
                                      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}});
  }
  return text;
}

int64_t HfTokenizer::vocab_size() const { return impl_->size; }
int64_t HfTokenizer::bos_id() const { return impl_->bos; }
int64_t HfTokenizer::eos_id() const { return impl_->eos; }
int64_t HfTokenizer::pad_id() const { return impl_->pad; }
int64_t HfTokenizer::unk_id() const { return impl_->unk; }

bool HfTokenizer::adds_bos() const {
  return impl_->bos >= 0 && std::find(impl_->prefix_ids.begin(), impl_->prefix_ids.end(),
                                      impl_->bos) != impl_->prefix_ids.end();
}

bool HfTokenizer::adds_eos() const {
  return impl_->eos >= 0 && std::find(impl_->suffix_ids.begin(), impl_->suffix_ids.end(),
                                      impl_->eos) != impl_->suffix_ids.end();
}

int64_t HfTokenizer::IdOf(std::string_view token) const {
  auto added = impl_->added_by_content.find(Av(token));
  if (added != impl_->added_by_content.end()) return impl_->added[added->second].id;
  auto it = impl_->vocab.find(Av(token));
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::string HfTokenizer::IdToToken(int64_t id) const {
  if (id < 0 || id >= impl_->size) return "";
  auto token = impl_->id_to_token.find(id);
  return token == impl_->id_to_token.end() ? std::string() : token->second;
}

bool HfTokenizer::IsSpecial(int64_t id) const {
  auto added = impl_->added_by_id.find(id);
  return added != impl_->added_by_id.end() && impl_->added[added->second].special;
}

}  // namespace mpt
