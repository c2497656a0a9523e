#include "server/rendezvous_kv.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/quote.h"

namespace mpt {
namespace {

absl::Status CheckName(const std::string& name, const char* field, size_t max_bytes) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (name.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", QuoteForError(name), " is longer than ", max_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RendezvousKv::Set(const std::string& group, const std::string& key,
                               std::string value) {
  if (absl::Status s = CheckName(group, "group", kMaxGroupBytes); !s.ok()) return s;
  if (absl::Status s = CheckName(key, "key", kMaxKeyBytes); !s.ok()) return s;
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value: ", value.size(), " bytes is more than the store keeps (", kMaxValueBytes, ")"));
  }
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(group);
  const bool new_group = it == groups_.end();
  if (new_group && groups_.size() >= kMaxGroups) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the rendezvous store holds ", kMaxGroups, " groups already"));
  }
  const Group empty;
  const Group& g = new_group ? empty : it->second;
  auto old = g.values.find(key);
  const bool new_key = old == g.values.end();
  if (new_key && g.values.size() >= kMaxKeysPerGroup) {
    return absl::ResourceExhaustedError(
        absl::StrCat("group ", QuoteForError(group), " holds ", kMaxKeysPerGroup, " keys already"));
  }
  const size_t removed = new_key ? 0 : key.size() + old->second.size();
  const size_t added = key.size() + value.size();
  if (g.bytes - removed + added > kMaxGroupDataBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("group ", QuoteForError(group), " would hold ",
                                                     g.bytes - removed + added,
                                                     " bytes; at most ", kMaxGroupDataBytes));
  }
  if (total_bytes_ - removed + added > kMaxTotalBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the rendezvous store would hold more than ", kMaxTotalBytes, " bytes"));
  }
  if (new_group) it = groups_.emplace(group, Group()).first;
  Group& target = it->second;
  target.bytes = target.bytes - removed + added;
  total_bytes_ = total_bytes_ - removed + added;
  target.values[key] = std::move(value);
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RendezvousKv::Get(const std::string& group,
                                                           const std::vector<std::string>& keys,
                                                           absl::Time deadline) {
  if (absl::Status s = CheckName(group, "group", kMaxGroupBytes); !s.ok()) return s;
  if (keys.empty()) return absl::InvalidArgumentError("keys: at least one key is required");
  if (keys.size() > kMaxKeysPerGroup) {
    return absl::InvalidArgumentError(
        absl::StrCat("keys: ", keys.size(), " keys; a group holds at most ", kMaxKeysPerGroup));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string field = absl::StrCat("keys[", i, "]");
    if (absl::Status s = CheckName(keys[i], field.c_str(), kMaxKeyBytes); !s.ok()) {
      if (keys[i].empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
      return s;
    }
  }
  absl::MutexLock lock(&mu_);
  while (true) {
    std::vector<std::string> missing;
    std::vector<std::string> values;
    auto it = groups_.find(group);
    for (const std::string& key : keys) {
      if (it == groups_.end() || it->second.values.count(key) == 0) {
        missing.push_back(key);
      } else {
        values.push_back(it->second.values.at(key));
      }
    }
    if (missing.empty()) return values;
    if (shutting_down_) return absl::UnavailableError("coordinator is shutting down");
    if (absl::Now() >= deadline) {
      // Named escaped, and at most ten of them.
      std::vector<std::string> named;
      for (size_t i = 0; i < std::min<size_t>(missing.size(), 10); ++i) {
        named.push_back(QuoteForError(missing[i]));
      }
      if (missing.size() > named.size()) {
        named.push_back(absl::StrCat("and ", missing.size() - named.size(), " more"));
      }
      return absl::DeadlineExceededError(absl::StrCat("group ", QuoteForError(group),
                                                      ": still missing keys ",
                                                      absl::StrJoin(named, ", ")));
    }
    changed_.WaitWithDeadline(&mu_, deadline);
  }
}

void RendezvousKv::EraseGroup(const std::string& group) {
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(group);
  if (it == groups_.end()) return;
  total_bytes_ -= it->second.bytes;
  groups_.erase(it);
}

void RendezvousKv::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  changed_.SignalAll();
}

}  // namespace mpt
