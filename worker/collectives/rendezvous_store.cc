#include "worker/collectives/rendezvous_store.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

// How often FileRendezvousStore looks for missing keys.
constexpr absl::Duration kPollInterval = absl::Milliseconds(5);

absl::Status MissingKeys(const std::vector<std::string>& missing, absl::Duration timeout) {
  return absl::DeadlineExceededError(
      absl::StrCat("rendezvous store: keys [", absl::StrJoin(missing, ", "),
                   "] did not appear within ", absl::FormatDuration(timeout)));
}

// Keys may hold any byte; file names keep letters, digits, '-', '_' and '.'
// (not leading) and write every other byte as %XX.
std::string FileNameFor(const std::string& key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "k_";
  for (unsigned char c : key) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace

absl::Status InMemoryRendezvousStore::Set(const std::string& key, const std::string& value) {
  absl::MutexLock lock(&mu_);
  values_[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> InMemoryRendezvousStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto all_present = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    for (const std::string& k : keys) {
      if (values_.count(k) == 0) return false;
    }
    return true;
  };
  mu_.AwaitWithTimeout(absl::Condition(&all_present), timeout);
  std::vector<std::string> out;
  std::vector<std::string> missing;
  for (const std::string& k : keys) {
    auto it = values_.find(k);
    if (it == values_.end()) {
      missing.push_back(k);
    } else {
      out.push_back(it->second);
    }
  }
  if (!missing.empty()) return MissingKeys(missing, timeout);
  return out;
}

FileRendezvousStore::FileRendezvousStore(std::string folder) : folder_(std::move(folder)) {}

std::string FileRendezvousStore::PathFor(const std::string& key) const {
  return (fs::path(folder_) / FileNameFor(key)).string();
}

absl::Status FileRendezvousStore::Set(const std::string& key, const std::string& value) {
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("rendezvous store: cannot create ", folder_, ": ", ec.message()));
  }
  // A name no other writer uses (process id plus a per-process counter);
  // the leading '.' keeps it apart from key files.
  static std::atomic<uint64_t> counter{0};
  const std::string path = PathFor(key);
  const std::string tmp = (fs::path(folder_) / absl::StrCat(".tmp.", getpid(), ".",
                                                            counter.fetch_add(1)))
                              .string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    out.close();
    if (!out) {
      const std::string reason = std::strerror(errno);
      fs::remove(tmp, ec);
      return absl::UnavailableError(
          absl::StrCat("rendezvous store: cannot write ", tmp, ": ", reason));
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return absl::UnavailableError(
        absl::StrCat("rendezvous store: cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FileRendezvousStore::Get(
    const std::vector<std::string>& keys, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::vector<std::string> missing;
    for (const std::string& k : keys) {
      if (std::error_code ec; !fs::exists(PathFor(k), ec)) missing.push_back(k);
    }
    if (missing.empty()) break;
    if (absl::Now() >= deadline) return MissingKeys(missing, timeout);
    absl::SleepFor(kPollInterval);
  }
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string& k : keys) {
    std::ifstream in(PathFor(k), std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) {
      return absl::UnavailableError(
          absl::StrCat("rendezvous store: cannot read ", PathFor(k), ": ", std::strerror(errno)));
    }
    out.push_back(std::move(bytes).str());
  }
  return out;
}

}  // namespace mpt
