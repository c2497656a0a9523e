#include "common/file_digest.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kWholeFileBytes = 8ull << 20;
constexpr uint64_t kHeadBytes = 1ull << 20;
constexpr uint64_t kTailBytes = 64ull << 10;
constexpr uint64_t kSampleBytes = 4ull << 10;
constexpr int kSamples = 64;

absl::Status ReadError(const std::string& path, const std::string& what) {
  return absl::NotFoundError(absl::StrCat(path, ": cannot read (", what, ")"));
}

// Hashes `length` bytes of `in` from `offset`.
absl::Status HashRange(std::ifstream& in, const std::string& path, uint64_t offset,
                       uint64_t length, Sha256* hash) {
  std::vector<char> buffer(static_cast<size_t>(std::min<uint64_t>(length, 1 << 20)));
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  while (length > 0) {
    const uint64_t n = std::min<uint64_t>(length, buffer.size());
    in.read(buffer.data(), static_cast<std::streamsize>(n));
    if (static_cast<uint64_t>(in.gcount()) != n) return ReadError(path, "it ended early");
    hash->Update(absl::string_view(buffer.data(), n));
    length -= n;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FileDigest(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return ReadError(path, "not a regular file");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return ReadError(path, ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) return ReadError(path, std::strerror(errno));
  Sha256 hash;
  hash.Update(absl::StrCat("mpt.file.v1:", size, ":"));
  if (size <= kWholeFileBytes) {
    if (absl::Status s = HashRange(in, path, 0, size, &hash); !s.ok()) return s;
    return hash.HexDigest();
  }
  if (absl::Status s = HashRange(in, path, 0, kHeadBytes, &hash); !s.ok()) return s;
  const uint64_t middle = size - kHeadBytes - kTailBytes;
  for (int i = 0; i < kSamples; ++i) {
    const uint64_t at = kHeadBytes + (middle - kSampleBytes) * i / (kSamples - 1);
    if (absl::Status s = HashRange(in, path, at, kSampleBytes, &hash); !s.ok()) return s;
  }
  if (absl::Status s = HashRange(in, path, size - kTailBytes, kTailBytes, &hash); !s.ok()) {
    return s;
  }
  return hash.HexDigest();
}

absl::StatusOr<std::string> ModelFolderDigest(const std::string& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return ReadError(folder, "not a folder");
  std::vector<std::string> names;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool defines = name == "config.json" || name == "tokenizer.json" ||
                         name == "tokenizer_config.json" || name == "special_tokens_map.json" ||
                         name == "spiece.model" || absl::EndsWith(name, ".safetensors") ||
                         absl::EndsWith(name, ".safetensors.index.json");
    if (defines && it->is_regular_file(ec)) names.push_back(name);
  }
  if (ec) return ReadError(folder, ec.message());
  std::sort(names.begin(), names.end());
  Sha256 hash;
  hash.Update("mpt.model.v1");
  for (const std::string& name : names) {
    absl::StatusOr<std::string> d = FileDigest((fs::path(folder) / name).string());
    if (!d.ok()) return d.status();
    hash.Update(absl::StrCat(":", name.size(), ":", name, "=", *d));
  }
  return hash.HexDigest();
}

}  // namespace mpt
