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

}  // namespace mpt

#endif  // MPT_COMMON_QUOTE_H_
