// The rendezvous key-value store that gang members use to exchange their
// collective's bootstrap data: groups of keys with string values, in
// memory only. Values replace earlier ones; a group is dropped as a whole
// (EraseGroup) when the gang attempt it belongs to ends.
//
// Limits: group names up to kMaxGroupBytes, keys up to kMaxKeyBytes,
// values up to kMaxValueBytes; kMaxKeysPerGroup keys and kMaxGroupDataBytes
// (keys and values) a group; kMaxGroups groups and kMaxTotalBytes in all.
// The store itself takes any group name: Coordinator::StoreSet() accepts
// only the group of a running stage attempt (Assignment.group), so groups
// exist only while their attempt runs.
//
// Thread-safety: every method may be called from any thread; Get() blocks
// without holding any lock of the caller.
#ifndef MPT_SERVER_RENDEZVOUS_KV_H_
#define MPT_SERVER_RENDEZVOUS_KV_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mpt {

class RendezvousKv {
 public:
  static constexpr size_t kMaxGroupBytes = 1024;
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxValueBytes = size_t{1} << 20;
  static constexpr size_t kMaxKeysPerGroup = 1024;
  static constexpr size_t kMaxGroupDataBytes = size_t{8} << 20;
  static constexpr size_t kMaxGroups = 10000;
  static constexpr size_t kMaxTotalBytes = size_t{256} << 20;

  RendezvousKv() = default;
  RendezvousKv(const RendezvousKv&) = delete;
  RendezvousKv& operator=(const RendezvousKv&) = delete;

  // Sets `key` of `group` to `value` and wakes waiting Get()s. OK;
  // INVALID_ARGUMENT naming group/key/value for an empty group or key, or
  // one over its size limit; RESOURCE_EXHAUSTED when the change would make
  // the group hold more than kMaxKeysPerGroup keys or kMaxGroupDataBytes,
  // the store more than kMaxGroups groups or kMaxTotalBytes (nothing is
  // changed then).
  absl::Status Set(const std::string& group, const std::string& key, std::string value);

  // The values of `keys` in order, waiting until `deadline` for all of them
  // to exist. DEADLINE_EXCEEDED naming the missing keys; INVALID_ARGUMENT
  // for an empty group, an empty key list, an empty key, more than
  // kMaxKeysPerGroup keys or a name over its size limit; UNAVAILABLE after
  // Shutdown().
  absl::StatusOr<std::vector<std::string>> Get(const std::string& group,
                                               const std::vector<std::string>& keys,
                                               absl::Time deadline);

  // Drops `group` and its keys (nothing happens for an unknown group).
  void EraseGroup(const std::string& group);

  // Wakes every waiting Get(), which returns UNAVAILABLE unless its keys
  // exist; so do later ones that would wait. Idempotent.
  void Shutdown();

 private:
  absl::Mutex mu_;
  absl::CondVar changed_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  struct Group {
    std::map<std::string, std::string> values;
    size_t bytes = 0;  // keys and values
  };
  std::map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);
  size_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // every group's keys and values
};

}  // namespace mpt

#endif  // MPT_SERVER_RENDEZVOUS_KV_H_
