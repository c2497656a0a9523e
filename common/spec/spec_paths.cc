#include "common/spec/spec_paths.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/quote.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// Absolute, normal and with the symbolic links of its existing part
// resolved; the lexical form when that fails (a folder on the way that
// cannot be searched).
fs::path Resolved(const std::string& path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  if (ec) absolute = fs::path(path);
  fs::path resolved = fs::weakly_canonical(absolute, ec);
  return ec ? absolute.lexically_normal() : resolved;
}

bool Within(const fs::path& path, const fs::path& root) {
  auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  // A trailing separator leaves an empty last component.
  return r == root.end() || (std::next(r) == root.end() && r->empty());
}

}  // namespace

std::vector<SpecPath> SpecInputPaths(const mpt::v1::PipelineSpec& spec) {
  std::vector<SpecPath> out;
  auto add = [&](std::string field, const std::string& path) {
    if (!path.empty()) out.push_back({std::move(field), path});
  };
  auto tasks = [&](absl::string_view stage,
                   const google::protobuf::RepeatedPtrField<mpt::v1::TaskData>& list) {
    for (int i = 0; i < list.size(); ++i) {
      add(absl::StrCat(stage, ".tasks[", i, "].train_path"), list[i].train_path());
      add(absl::StrCat(stage, ".tasks[", i, "].eval_path"), list[i].eval_path());
    }
  };
  auto folders = [&](absl::string_view field,
                     const google::protobuf::RepeatedPtrField<std::string>& list) {
    for (int i = 0; i < list.size(); ++i) add(absl::StrCat(field, "[", i, "]"), list[i]);
  };
  add("base_model", spec.base_model());
  tasks("source", spec.source().tasks());
  tasks("distillation", spec.distillation().tasks());
  tasks("target", spec.target().tasks());
  folders("source.init_adapters", spec.source().init_adapters());
  folders("distillation.teacher_adapters", spec.distillation().teacher_adapters());
  folders("target.teacher_adapters", spec.target().teacher_adapters());
  add("target.source_adapter", spec.target().source_adapter());
  return out;
}

std::vector<SpecPath> ServiceFilePaths(const mpt::v1::PipelineSpec& spec,
                                       absl::string_view prefix) {
  std::vector<SpecPath> out;
  for (SpecPath& p : SpecInputPaths(spec)) {
    if (absl::StartsWith(p.field, "distillation.teacher_adapters") ||
        p.field == "target.source_adapter") {
      continue;
    }
    p.field = absl::StrCat(prefix, p.field);
    out.push_back(std::move(p));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseDataRoots(absl::string_view value,
                                                         absl::string_view flag) {
  std::vector<std::string> roots;
  if (absl::StripAsciiWhitespace(value).empty()) return roots;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty() || part.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": ", QuoteForError(part), " is not an absolute folder (give /path[,/path...])"));
    }
    roots.push_back(std::string(part));
  }
  return roots;
}

absl::Status CheckPathsWithinRoots(const std::vector<SpecPath>& paths,
                                   const std::vector<std::string>& roots,
                                   absl::string_view machine, absl::string_view flag) {
  if (roots.empty()) return absl::OkStatus();
  std::vector<fs::path> resolved_roots;
  for (const std::string& root : roots) resolved_roots.push_back(Resolved(root));
  for (const SpecPath& p : paths) {
    const fs::path resolved = Resolved(p.path);
    const bool inside = std::any_of(resolved_roots.begin(), resolved_roots.end(),
                                    [&](const fs::path& root) { return Within(resolved, root); });
    if (!inside) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.field, ": ", QuoteForError(p.path), " is outside the folders this ", machine,
          " reads jobs' files from (", flag, ": ", absl::StrJoin(roots, ","), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace mpt
