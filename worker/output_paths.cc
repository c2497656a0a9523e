#include "worker/output_paths.h"

#include <algorithm>
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

absl::Status CheckNoInputInside(const std::vector<std::string>& replaced, absl::string_view flag,
                                const std::vector<InputPath>& inputs) {
  for (const std::string& folder : replaced) {
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(fs::absolute(folder), ec);
    if (ec) continue;
    for (const InputPath& input : inputs) {
      if (input.path.empty()) continue;
      const fs::path path = fs::weakly_canonical(fs::absolute(input.path), ec);
      if (ec) continue;
      // `path` is `root` or below it when every component of `root` starts it.
      auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
      if (r != root.end()) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": ", folder, " is replaced by this run's output, but it holds ", input.path,
          " (", input.what, "), which would be lost; keep the inputs elsewhere or choose another ",
          flag));
    }
  }
  return absl::OkStatus();
}

}  // namespace mpt
