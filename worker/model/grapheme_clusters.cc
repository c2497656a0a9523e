#include "worker/model/grapheme_clusters.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace mpt {
namespace {

// Grapheme_Cluster_Break values, in the order the table uses.
enum Gcb : uint8_t {
  kOther = 0,
  kCR,
  kLF,
  kControl,
  kExtend,
  kZWJ,
  kRegionalIndicator,
  kPrepend,
  kSpacingMark,
  kL,
  kV,
  kT,
  kLV,
  kLVT,
};

// Indic_Conjunct_Break values.
enum Incb : uint8_t { kIncbNone = 0, kIncbLinker, kIncbConsonant, kIncbExtend };

struct Range {
  char32_t first;
  char32_t last;
  uint8_t properties;
};

constexpr Range kTable[] = {
#include "worker/model/grapheme_break_table.inc"
};

struct Properties {
  Gcb gcb = kOther;
  bool pictographic = false;
  Incb incb = kIncbNone;
};

Properties Lookup(char32_t c) {
  Properties p;
  if (c == kInvalidCodePoint) {
    p.gcb = kControl;
    return p;
  }
  if (c >= 0xAC00 && c <= 0xD7A3) {  // Hangul syllables: LV every 28th
    p.gcb = (c - 0xAC00) % 28 == 0 ? kLV : kLVT;
    return p;
  }
  auto it = std::upper_bound(std::begin(kTable), std::end(kTable), c,
                             [](char32_t value, const Range& r) { return value < r.first; });
  if (it == std::begin(kTable)) return p;
  --it;
  if (c > it->last) return p;
  p.gcb = static_cast<Gcb>(it->properties & 0xF);
  p.pictographic = (it->properties >> 4) & 1;
  p.incb = static_cast<Incb>((it->properties >> 5) & 3);
  return p;
}

bool IsContinuation(unsigned char b) { return (b & 0xC0) == 0x80; }

}  // namespace

size_t DecodeUtf8(absl::string_view text, size_t pos, char32_t* code_point) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + pos;
  const size_t left = text.size() - pos;
  const unsigned char b0 = s[0];
  *code_point = kInvalidCodePoint;
  if (b0 < 0x80) {
    *code_point = b0;
    return 1;
  }
  size_t length;
  char32_t c;
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    c = b0 & 0x0F;
    if (b0 == 0xE0) second_min = 0xA0;  // no overlong forms
    if (b0 == 0xED) second_max = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    c = b0 & 0x07;
    if (b0 == 0xF0) second_min = 0x90;
    if (b0 == 0xF4) second_max = 0x8F;  // nothing past U+10FFFF
  } else {
    return 1;
  }
  if (left < length || s[1] < second_min || s[1] > second_max) return 1;
  for (size_t i = 1; i < length; ++i) {
    if (!IsContinuation(s[i])) return 1;
    c = (c << 6) | (s[i] & 0x3F);
  }
  *code_point = c;
  return length;
}

bool IsUnicodeWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

size_t GraphemeClusterEnd(absl::string_view text, size_t pos) {
  char32_t c;
  size_t end = pos + DecodeUtf8(text, pos, &c);
  Properties prev = Lookup(c);
  // State of the rules that look further back than one character.
  int regional_indicators = prev.gcb == kRegionalIndicator ? 1 : 0;  // GB12, GB13
  // GB11: 1 after ExtPict Extend*, 2 after ExtPict Extend* ZWJ.
  int emoji = prev.pictographic ? 1 : 0;
  // GB9c: 1 after Consonant [Extend Linker]* with no Linker yet, 2 with one.
  int conjunct = prev.incb == kIncbConsonant ? 1 : 0;

  while (end < text.size()) {
    const size_t length = DecodeUtf8(text, end, &c);
    const Properties next = Lookup(c);
    bool join;
    if (prev.gcb == kCR && next.gcb == kLF) {
      join = true;  // GB3
    } else if (prev.gcb == kCR || prev.gcb == kLF || prev.gcb == kControl) {
      join = false;  // GB4
    } else if (next.gcb == kCR || next.gcb == kLF || next.gcb == kControl) {
      join = false;  // GB5
    } else if (prev.gcb == kL &&
               (next.gcb == kL || next.gcb == kV || next.gcb == kLV || next.gcb == kLVT)) {
      join = true;  // GB6
    } else if ((prev.gcb == kLV || prev.gcb == kV) && (next.gcb == kV || next.gcb == kT)) {
      join = true;  // GB7
    } else if ((prev.gcb == kLVT || prev.gcb == kT) && next.gcb == kT) {
      join = true;  // GB8
    } else if (next.gcb == kExtend || next.gcb == kZWJ || next.gcb == kSpacingMark ||
               prev.gcb == kPrepend) {
      join = true;  // GB9, GB9a, GB9b
    } else if (conjunct == 2 && next.incb == kIncbConsonant) {
      join = true;  // GB9c
    } else if (emoji == 2 && next.pictographic) {
      join = true;  // GB11
    } else if (prev.gcb == kRegionalIndicator && next.gcb == kRegionalIndicator) {
      join = regional_indicators % 2 == 1;  // GB12, GB13
    } else {
      join = false;  // GB999
    }
    if (!join) break;

    regional_indicators = next.gcb == kRegionalIndicator ? regional_indicators + 1 : 0;
    if (next.pictographic) {
      emoji = 1;
    } else if (emoji == 1 && next.gcb == kExtend) {
      emoji = 1;
    } else if (emoji == 1 && next.gcb == kZWJ) {
      emoji = 2;
    } else {
      emoji = 0;
    }
    if (next.incb == kIncbConsonant) {
      conjunct = 1;
    } else if (conjunct != 0 && next.incb == kIncbLinker) {
      conjunct = 2;
    } else if (conjunct != 0 && next.incb == kIncbExtend) {
      // stays
    } else {
      conjunct = 0;
    }
    prev = next;
    end += length;
  }
  return end;
}

}  // namespace mpt
