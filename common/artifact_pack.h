// A folder as one blob and back: how adapters and checkpoints travel between
// workers, the coordinator and mptctl.
//
// The blob is a POSIX ustar archive (what `tar -xf` reads) holding the
// folder's regular files and sub-folders, with paths relative to the folder,
// in sorted order (a pax header carries a path longer than ustar's
// fields), with mode 0644/0755, owner 0 and time 0, so that the
// same contents always give the same bytes (and the same SHA-256).
//
//   ASSIGN_OR_RETURN(std::string blob, PackFolder("/runs/x/source/sst2"));
//   RETURN_IF_ERROR(UnpackFolder(blob, "/tmp/inputs/teacher-0"));
//
// Thread-safety: the functions keep no state.
#ifndef MPT_COMMON_ARTIFACT_PACK_H_
#define MPT_COMMON_ARTIFACT_PACK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/file_util.h"

namespace mpt {

struct PackLimits {
  // The largest total of file bytes accepted. Default 4 GiB.
  uint64_t max_total_bytes = uint64_t{4} << 30;
  // The most entries (files and folders). Default 100000.
  int max_entries = 100000;
};

// The folder's files and sub-folders as a ustar archive. NOT_FOUND when
// `folder` is not a folder; FAILED_PRECONDITION naming the path for an entry
// that cannot be archived (a symbolic link, a device); RESOURCE_EXHAUSTED above `limits`; INTERNAL when a file
// cannot be read.
absl::StatusOr<std::string> PackFolder(const std::string& folder,
                                       const PackLimits& limits = {});

// One entry of an archive.
struct PackedEntry {
  std::string path;  // relative, '/'-separated
  bool is_folder = false;
  std::string contents;  // empty for folders
};

// Parses an archive made by PackFolder() or by tar (ustar, GNU or pax
// headers for long names). INVALID_ARGUMENT (naming the entry) for a
// corrupt or truncated archive, an entry type other than a file or folder,
// an absolute path or one that climbs out with ".."; RESOURCE_EXHAUSTED
// above `limits`.
absl::StatusOr<std::vector<PackedEntry>> ReadPackedEntries(absl::string_view archive,
                                                           const PackLimits& limits = {});

// Writes the archive's entries into `folder`, replacing what was there only
// when the whole archive was written (see ReplaceFolder()): on any error
// the old folder is left as it was. Errors as for ReadPackedEntries(), and
// INTERNAL for a failed write.
absl::Status UnpackFolder(absl::string_view archive, const std::string& folder,
                          const PackLimits& limits = {});

// What a download of an adapter artefact leaves in its folder (a PEFT
// adapter: adapter_config.json and adapter_model.safetensors), for
// CheckFolderReplaceable().
const ReplaceableContents& AdapterFolderContents();

// Whether a download the user asked for may write `folder`: it does not
// exist, is an empty folder, or holds nothing but an earlier download's
// adapter files (CheckFolderReplaceable() with AdapterFolderContents();
// FAILED_PRECONDITION otherwise, led by `label`, e.g. "--out"). Check every
// folder of a download before fetching anything.
absl::Status CheckDownloadFolder(const std::string& folder, absl::string_view label);

// UnpackFolder() for a download: refuses (as CheckDownloadFolder) before
// writing anything and again just before the swap, so that it never
// deletes what the user did not ask to replace; the replace itself is
// ReplaceFolder()'s.
absl::Status UnpackDownload(absl::string_view archive, const std::string& folder,
                            absl::string_view label, const PackLimits& limits = {});

}  // namespace mpt

#endif  // MPT_COMMON_ARTIFACT_PACK_H_
