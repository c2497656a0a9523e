#include "server/rendezvous_kv.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace mpt {

absl::Status RendezvousKv::Set(const std::string& group, const std::string& key,
                               std::string value) {
  if (group.empty()) return absl::InvalidArgumentError("group: required");
  if (key.empty()) return absl::InvalidArgumentError("key: required");
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value: ", value.size(), " bytes is more than the store keeps (", kMaxValueBytes, ")"));
  }
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(group);
  if (it == groups_.end()) {
    if (groups_.size() >= kMaxGroups) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the rendezvous store holds ", kMaxGroups, " groups already"));
    }
    it = groups_.emplace(group, std::map<std::string, std::string>()).first;
  }
  if (it->second.count(key) == 0 && it->second.size() >= kMaxKeysPerGroup) {
    return absl::ResourceExhaustedError(
        absl::StrCat("group ", group, " holds ", kMaxKeysPerGroup, " keys already"));
  }
  it->second[key] = std::move(value);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RendezvousKv::Get(const std::string& group,
                                                           const std::vector<std::string>& keys,
                                                           absl::Time deadline) {
  if (group.empty()) return absl::InvalidArgumentError("group: required");
  if (keys.empty()) return absl::InvalidArgumentError("keys: at least one key is required");
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].empty()) return absl::InvalidArgumentError(absl::StrCat("keys[", i, "]: empty"));
  }
  absl::MutexLock lock(&mu_);
  while (true) {
    std::vector<std::string> missing;
    std::vector<std::string> values;
    auto it = groups_.find(group);
    for (const std::string& key : keys) {
      if (it == groups_.end() || it->second.count(key) == 0) {
        missing.push_back(key);
      } else {
        values.push_back(it->second.at(key));
      }
    }
    if (missing.empty()) return values;
    if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("group ", group, ": still missing keys ",
                                                      absl::StrJoin(missing, ", ")));
    }
    changed_.WaitWithDeadline(&mu_, deadline);
  }
}

void RendezvousKv::EraseGroup(const std::string& group) {
  absl::MutexLock lock(&mu_);
  groups_.erase(group);
}

void RendezvousKv::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  changed_.SignalAll();
}

}  // namespace mpt
