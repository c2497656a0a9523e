#include "worker/output_paths.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

bool Same(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

absl::Status Clash(const std::string& output, absl::string_view flag, const fs::path& input,
                   const std::string& what) {
  const bool same_spelling = fs::path(output).lexically_normal() == input.lexically_normal();
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": ", output, " is ", same_spelling ? "" : absl::StrCat(input.string(), ", "),
      "an input (", what, "); writing it would destroy it"));
}

}  // namespace

absl::Status CheckOutputIsNotAnInput(const std::string& output, absl::string_view flag,
                                     const std::vector<InputPath>& inputs) {
  std::error_code ec;
  if (output.empty() || !fs::exists(output, ec)) return absl::OkStatus();
  for (const InputPath& input : inputs) {
    if (input.path.empty()) continue;
    const fs::path path(input.path);
    if (Same(output, path)) return Clash(output, flag, path, input.what);
    if (!fs::is_directory(path, ec)) continue;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      if (Same(output, it->path())) return Clash(output, flag, it->path(), input.what);
    }
  }
  return absl::OkStatus();
}

}  // namespace mpt
