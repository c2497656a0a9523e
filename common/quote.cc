#include "common/quote.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace mpt {

std::string QuoteForError(absl::string_view text) {
  constexpr size_t kShown = 64;
  if (text.size() <= kShown) return absl::StrCat("\"", absl::CHexEscape(text), "\"");
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kShown)), "\"... (", text.size(),
                      " bytes)");
}

std::string ErrorMessageForClient(absl::string_view message) {
  std::string out;
  out.reserve(std::min(message.size(), kMaxClientErrorBytes) + 16);
  size_t i = 0;
  for (; i < message.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    const bool control = c < 0x20 || c == 0x7f;
    std::string piece = control ? absl::CHexEscape(message.substr(i, 1)) : std::string(1, c);
    // Cut only before a byte that starts a character (not 10xxxxxx).
    if (out.size() + piece.size() > kMaxClientErrorBytes && (c & 0xc0) != 0x80) break;
    out += piece;
  }
  if (i < message.size()) absl::StrAppend(&out, "... (", message.size(), " bytes)");
  return out;
}

}  // namespace mpt
