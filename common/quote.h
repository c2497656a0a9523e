// Text from a request or a file, made safe to put in an error message or a
// log line.
#ifndef MPT_COMMON_QUOTE_H_
#define MPT_COMMON_QUOTE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace mpt {

// `text` in double quotes, escaped (absl::CHexEscape: no control
// character, quote or backslash survives) and cut to its first 64 bytes
// followed by its size, so that neither a newline nor a megabyte of it
// reaches the message (errors travel back in gRPC's headers, bounded at
// 8 KiB) or the log.
std::string QuoteForError(absl::string_view text);

// The longest error message that leaves a process (ErrorMessageForClient).
inline constexpr size_t kMaxClientErrorBytes = 4096;

// `message` made fit to send to a client as one line: control characters
// (newlines, NUL, ...) become escapes ("\n", "\x00"), other bytes (UTF-8
// text included) stay, and past kMaxClientErrorBytes it is cut at a
// character boundary and ends "... (N bytes)". A last guard for errors that
// embed request text without QuoteForError().
std::string ErrorMessageForClient(absl::string_view message);

}  // namespace mpt

#endif  // MPT_COMMON_QUOTE_H_
