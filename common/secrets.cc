#include "common/secrets.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace mpt {

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

absl::StatusOr<std::string> RandomHexSecret(int bytes) {
  if (bytes <= 0 || bytes > 256) {
    return absl::InvalidArgumentError(absl::StrCat("secret of ", bytes, " bytes"));
  }
  std::vector<char> raw(static_cast<size_t>(bytes));
  size_t filled = 0;
  while (filled < raw.size()) {
    ssize_t n = getrandom(raw.data() + filled, raw.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    }
    filled += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(absl::string_view(raw.data(), raw.size()));
}

}  // namespace mpt
