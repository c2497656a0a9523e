// libFuzzer target: an uploaded or downloaded artefact (a ustar archive) as
// ReadPackedEntries and the coordinator's ValidateAdapterArtifact see it.
// Every entry accepted must be safe to write under a folder: a relative
// path of non-empty components, none "." or "..", without NUL bytes,
// never both a file and a folder, never under a file.
#include <cstddef>
#include <cstdint>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/artifact_pack.h"
#include "server/adapter_validation.h"

namespace {

bool SafeRelativePath(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string::npos) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view blob(reinterpret_cast<const char*>(data), size);
  mpt::PackLimits limits;
  limits.max_entries = 64;
  limits.max_total_bytes = 1 << 20;
  auto entries = mpt::ReadPackedEntries(blob, limits);
  if (entries.ok()) {
    if (static_cast<int>(entries->size()) > limits.max_entries) __builtin_trap();
    uint64_t total = 0;
    for (const mpt::PackedEntry& e : *entries) {
      if (!SafeRelativePath(e.path)) __builtin_trap();
      if (e.is_folder && !e.contents.empty()) __builtin_trap();
      total += e.contents.size();
    }
    if (total > limits.max_total_bytes) __builtin_trap();
    // No path is both a file and a folder, nor lies under a file.
    for (const mpt::PackedEntry& a : *entries) {
      for (const mpt::PackedEntry& b : *entries) {
        if (a.path == b.path && a.is_folder != b.is_folder) __builtin_trap();
        if (!a.is_folder && b.path.compare(0, a.path.size() + 1, a.path + "/") == 0) {
          __builtin_trap();
        }
      }
    }
  }
  // The shapes the seed corpus's adapters have: a PEFT prompt-tuning
  // adapter and a multitask one (3 tasks, rank 1), 4 tokens, encoder-decoder.
  mpt::ExpectedAdapter plain;
  plain.num_virtual_tokens = 4;
  plain.num_transformer_submodules = 2;
  mpt::ExpectedAdapter multitask = plain;
  multitask.multitask = true;
  multitask.num_tasks = 3;
  multitask.num_ranks = 1;
  mpt::ExpectedAdapter any_rank = multitask;
  any_rank.num_ranks = 0;
  for (const mpt::ExpectedAdapter& want : {plain, multitask, any_rank}) {
    absl::Status s = mpt::ValidateAdapterArtifact(blob, want, "upload");
    if (s.ok() && !entries.ok()) __builtin_trap();  // validation reads the same archive
  }
  return 0;
}
