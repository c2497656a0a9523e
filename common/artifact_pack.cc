#include "common/artifact_pack.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/quote.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

constexpr size_t kBlock = 512;

// Offsets of the ustar header fields.
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kModeOff = 100;
constexpr size_t kUidOff = 108;
constexpr size_t kGidOff = 116;
constexpr size_t kSizeOff = 124, kSizeLen = 12;
constexpr size_t kMtimeOff = 136;
constexpr size_t kChecksumOff = 148, kChecksumLen = 8;
constexpr size_t kTypeOff = 156;
constexpr size_t kMagicOff = 257;
constexpr size_t kVersionOff = 263;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;

void PutOctal(char* field, size_t len, uint64_t value) {
  // len - 1 digits, zero padded, then NUL.
  std::string digits(len - 1, '0');
  for (size_t i = len - 1; i-- > 0 && value > 0;) {
    digits[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  std::memcpy(field, digits.data(), len - 1);
  field[len - 1] = '\0';
}

unsigned HeaderChecksum(const char* header) {
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= kChecksumOff && i < kChecksumOff + kChecksumLen;
    sum += in_field ? ' ' : static_cast<unsigned char>(header[i]);
  }
  return sum;
}

// Splits `path` into ustar's prefix and name fields; false when it does not
// fit.
bool SplitUstarPath(const std::string& path, std::string* prefix, std::string* name) {
  if (path.size() <= kNameLen) {
    prefix->clear();
    *name = path;
    return true;
  }
  for (size_t slash = path.find('/'); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    if (slash <= kPrefixLen && path.size() - slash - 1 <= kNameLen && slash + 1 < path.size()) {
      *prefix = path.substr(0, slash);
      *name = path.substr(slash + 1);
      return true;
    }
  }
  return false;
}

void PadToBlock(std::string* out);

void AppendRawHeader(const std::string& prefix, const std::string& name, char type, int mode,
                     uint64_t size, std::string* out) {
  char header[kBlock];
  std::memset(header, 0, sizeof(header));
  std::memcpy(header + kNameOff, name.data(), std::min(name.size(), kNameLen));
  PutOctal(header + kModeOff, 8, mode);
  PutOctal(header + kUidOff, 8, 0);
  PutOctal(header + kGidOff, 8, 0);
  PutOctal(header + kSizeOff, kSizeLen, size);
  PutOctal(header + kMtimeOff, 12, 0);
  header[kTypeOff] = type;
  std::memcpy(header + kMagicOff, "ustar", 6);
  std::memcpy(header + kVersionOff, "00", 2);
  std::memcpy(header + kPrefixOff, prefix.data(), std::min(prefix.size(), kPrefixLen));
  char checksum[8];
  PutOctal(checksum, 7, HeaderChecksum(header));
  std::memcpy(header + kChecksumOff, checksum, 7);
  header[kChecksumOff + 7] = ' ';
  out->append(header, kBlock);
}

// One pax record "<len> path=<path>\n", where <len> counts the whole record.
std::string PaxPathRecord(const std::string& path) {
  const std::string body = " path=" + path + "\n";
  size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

// A file or folder header; paths that do not fit ustar's fields get a pax
// extended header first.
void AppendHeader(const std::string& path, bool folder, uint64_t size, std::string* out) {
  std::string prefix, name;
  if (!SplitUstarPath(path, &prefix, &name)) {
    const std::string record = PaxPathRecord(path);
    AppendRawHeader("", "PaxHeader", 'x', 0644, record.size(), out);
    out->append(record);
    PadToBlock(out);
    prefix.clear();
    name = path.substr(0, kNameLen);
  }
  AppendRawHeader(prefix, name, folder ? '5' : '0', folder ? 0755 : 0644, size, out);
}

void PadToBlock(std::string* out) {
  const size_t rem = out->size() % kBlock;
  if (rem != 0) out->append(kBlock - rem, '\0');
}

// A NUL-terminated (or full-width) string field.
std::string Field(absl::string_view header, size_t off, size_t len) {
  absl::string_view f = header.substr(off, len);
  const size_t nul = f.find('\0');
  return std::string(nul == absl::string_view::npos ? f : f.substr(0, nul));
}

bool ParseOctal(absl::string_view header, size_t off, size_t len, uint64_t* value) {
  std::string f = Field(header, off, len);
  absl::string_view s = absl::StripAsciiWhitespace(f);
  if (s.empty()) {
    *value = 0;
    return true;
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    if (v > (uint64_t{1} << 60)) return false;
    v = v * 8 + static_cast<uint64_t>(c - '0');
  }
  *value = v;
  return true;
}

// Checks an archive path and returns it normalised (no "./", no trailing
// '/'); empty for the archive's root entry.
absl::StatusOr<std::string> CleanPath(const std::string& raw) {
  if (raw.empty()) return absl::InvalidArgumentError("archive entry with an empty name");
  if (raw.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(QuoteForError(raw), ": archive entry name holds a NUL byte"));
  }
  if (raw[0] == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(QuoteForError(raw), ": absolute path in the archive"));
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(raw, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(QuoteForError(raw), ": path climbs out with \"..\""));
    }
    parts.emplace_back(part);
  }
  std::string clean;
  for (const std::string& p : parts) {
    if (!clean.empty()) clean += '/';
    clean += p;
  }
  return clean;
}

// The "path" record of a pax extended header, or "" when it has none.
std::string PaxPath(absl::string_view body) {
  // Records are "<len> <key>=<value>\n".
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t space = body.find(' ', pos);
    if (space == absl::string_view::npos) break;
    size_t len = 0;
    if (!absl::SimpleAtoi(body.substr(pos, space - pos), &len) || len == 0 ||
        pos + len > body.size()) {
      break;
    }
    absl::string_view record = body.substr(space + 1, pos + len - space - 2);
    if (absl::StartsWith(record, "path=")) return std::string(record.substr(5));
    pos += len;
  }
  return "";
}

}  // namespace

absl::StatusOr<std::string> PackFolder(const std::string& folder, const PackLimits& limits) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    return absl::NotFoundError(absl::StrCat(folder, ": not a folder"));
  }
  std::vector<std::pair<std::string, bool>> entries;  // relative path, is folder
  fs::recursive_directory_iterator it(folder, ec), end;
  if (ec) return absl::InternalError(absl::StrCat(folder, ": ", ec.message()));
  for (; it != end; it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(folder, ": ", ec.message()));
    const fs::path rel = it->path().lexically_relative(folder);
    const fs::file_status st = it->symlink_status(ec);
    if (ec) return absl::InternalError(absl::StrCat(it->path().string(), ": ", ec.message()));
    if (fs::is_directory(st)) {
      entries.emplace_back(rel.generic_string(), true);
    } else if (fs::is_regular_file(st)) {
      entries.emplace_back(rel.generic_string(), false);
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat(it->path().string(), ": only regular files and folders can be archived"));
    }
    if (static_cast<int>(entries.size()) > limits.max_entries) {
      return absl::ResourceExhaustedError(
          absl::StrCat(folder, ": more than ", limits.max_entries, " entries"));
    }
  }
  std::sort(entries.begin(), entries.end());
  std::string out;
  uint64_t total = 0;
  for (const auto& [rel, is_folder] : entries) {
    if (is_folder) {
      AppendHeader(rel + "/", true, 0, &out);
      continue;
    }
    ASSIGN_OR_RETURN(std::string contents, ReadFile((fs::path(folder) / rel).string()));
    total += contents.size();
    if (total > limits.max_total_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(folder, ": more than ", limits.max_total_bytes, " bytes"));
    }
    AppendHeader(rel, false, contents.size(), &out);
    out += contents;
    PadToBlock(&out);
  }
  out.append(2 * kBlock, '\0');
  return out;
}

absl::StatusOr<std::vector<PackedEntry>> ReadPackedEntries(absl::string_view archive,
                                                           const PackLimits& limits) {
  std::vector<PackedEntry> entries;
  uint64_t total = 0;
  size_t pos = 0;
  std::string long_name;  // from a GNU 'L' or pax 'x' header, for the next entry
  while (true) {
    if (pos + kBlock > archive.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("archive truncated at byte ", pos, " (no end-of-archive blocks)"));
    }
    absl::string_view header = archive.substr(pos, kBlock);
    if (header.find_first_not_of('\0') == absl::string_view::npos) break;  // end marker
    uint64_t stored_sum = 0;
    if (!ParseOctal(header, kChecksumOff, kChecksumLen, &stored_sum) ||
        stored_sum != HeaderChecksum(header.data())) {
      return absl::InvalidArgumentError(
          absl::StrCat("archive header at byte ", pos, ": bad checksum"));
    }
    uint64_t size = 0;
    if (!ParseOctal(header, kSizeOff, kSizeLen, &size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("archive header at byte ", pos, ": bad size field"));
    }
    const size_t data_pos = pos + kBlock;
    const uint64_t padded = (size + kBlock - 1) / kBlock * kBlock;
    if (size > archive.size() || data_pos + padded > archive.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("archive entry at byte ", pos, ": data runs past the end"));
    }
    absl::string_view data = archive.substr(data_pos, size);
    pos = data_pos + padded;

    const char type = header[kTypeOff];
    std::string name = Field(header, kNameOff, kNameLen);
    if (Field(header, kMagicOff, 5) == "ustar") {
      const std::string prefix = Field(header, kPrefixOff, kPrefixLen);
      if (!prefix.empty()) name = absl::StrCat(prefix, "/", name);
    }
    if (type == 'L') {  // GNU long name for the next entry
      long_name = std::string(data.substr(0, data.find('\0')));
      continue;
    }
    if (type == 'x') {  // pax extended header for the next entry
      long_name = PaxPath(data);
      continue;
    }
    if (type == 'g') continue;  // pax global header: nothing we need
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    const bool is_folder = type == '5';
    if (!is_folder && type != '0' && type != '\0') {
      return absl::InvalidArgumentError(absl::StrCat(QuoteForError(name), ": archive entry type ",
                                                     QuoteForError(std::string(1, type)),
                                                     " is not a regular file or folder"));
    }
    ASSIGN_OR_RETURN(std::string clean, CleanPath(name));
    if (clean.empty()) {
      if (is_folder) continue;  // "./"
      return absl::InvalidArgumentError(
          absl::StrCat(QuoteForError(name), ": file entry without a name"));
    }
    total += size;
    if (total > limits.max_total_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("archive holds more than ", limits.max_total_bytes, " bytes"));
    }
    if (static_cast<int>(entries.size()) >= limits.max_entries) {
      return absl::ResourceExhaustedError(
          absl::StrCat("archive holds more than ", limits.max_entries, " entries"));
    }
    PackedEntry entry;
    entry.path = std::move(clean);
    entry.is_folder = is_folder;
    if (!is_folder) entry.contents = std::string(data);
    entries.push_back(std::move(entry));
  }
  // A path that is a file must not also be a folder, nor lie under a file:
  // no folder could be written from such an archive. In sorted order the
  // paths under "f/" follow "f/" directly.
  std::map<std::string, bool> kinds;  // path -> is a folder
  for (const PackedEntry& e : entries) {
    auto [it, added] = kinds.emplace(e.path, e.is_folder);
    if (!added && it->second != e.is_folder) {
      return absl::InvalidArgumentError(absl::StrCat(
          QuoteForError(e.path), ": the archive has both a folder and a file of this name"));
    }
  }
  for (const auto& [path, is_folder] : kinds) {
    if (is_folder) continue;
    const std::string under = path + "/";
    auto next = kinds.lower_bound(under);
    if (next != kinds.end() && absl::StartsWith(next->first, under)) {
      return absl::InvalidArgumentError(absl::StrCat(QuoteForError(next->first), ": lies under ",
                                                     QuoteForError(path),
                                                     ", which the archive holds as a file"));
    }
  }
  return entries;
}

namespace {

// Writes `entries` into `tmp` (ReplaceFolder's fill).
absl::Status WriteEntries(const std::vector<PackedEntry>& entries, const std::string& tmp) {
  std::error_code ec;
  for (const PackedEntry& e : entries) {
    const fs::path path = fs::path(tmp) / e.path;
    if (e.is_folder) {
      fs::create_directories(path, ec);
      if (ec) return absl::InternalError(absl::StrCat(path.string(), ": ", ec.message()));
      continue;
    }
    // ReadPackedEntries() refused a file that is also a folder or lies
    // under a file, so the folders made here never meet a file.
    fs::create_directories(path.parent_path(), ec);
    if (ec) return absl::InternalError(absl::StrCat(path.string(), ": ", ec.message()));
    RETURN_IF_ERROR(WriteFileAtomically(path.string(), e.contents));
  }
  return absl::OkStatus();
}

}  // namespace

const ReplaceableContents& AdapterFolderContents() {
  static const ReplaceableContents* const kAdapter = new ReplaceableContents{
      {"adapter_config.json", "adapter_model.safetensors"}, "an adapter folder"};
  return *kAdapter;
}

absl::Status CheckDownloadFolder(const std::string& folder, absl::string_view label) {
  return CheckFolderReplaceable(folder, AdapterFolderContents(), label);
}

absl::Status UnpackDownload(absl::string_view archive, const std::string& folder,
                            absl::string_view label, const PackLimits& limits) {
  RETURN_IF_ERROR(CheckDownloadFolder(folder, label));
  ASSIGN_OR_RETURN(std::vector<PackedEntry> entries, ReadPackedEntries(archive, limits));
  return ReplaceFolder(
      folder, [&](const std::string& tmp) { return WriteEntries(entries, tmp); },
      [&] { return CheckDownloadFolder(folder, label); });
}

absl::Status UnpackFolder(absl::string_view archive, const std::string& folder,
                          const PackLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<PackedEntry> entries, ReadPackedEntries(archive, limits));
  return ReplaceFolder(folder, [&](const std::string& tmp) { return WriteEntries(entries, tmp); });
}

}  // namespace mpt
