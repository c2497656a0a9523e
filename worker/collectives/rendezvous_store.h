// The key-value store through which the ranks of a collective group find
// each other before they talk directly.
//
// Gloo's TCP transport publishes each rank's listening addresses here; NCCL's
// unique id travels from rank 0 to the others the same way. In the service,
// the worker daemon implements RendezvousStore over the coordinator's
// StoreSet / StoreGet RPCs (proto/mpt/v1/service.proto), with keys scoped to
// the group. For tests and single-host runs without a coordinator,
// FileRendezvousStore shares a folder and InMemoryRendezvousStore shares one
// object between threads.
//
// This header is free of libtorch, Gloo and gRPC on purpose: the daemon's
// implementation and the coordinator can use it without pulling any of them.
#ifndef MPT_WORKER_COLLECTIVES_RENDEZVOUS_STORE_H_
#define MPT_WORKER_COLLECTIVES_RENDEZVOUS_STORE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace mpt {

// Implementations must be safe to call from several threads at once (a
// group formed by threads of one process shares one store).
class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;

  // Stores `value` (any bytes) under `key`, replacing an earlier value.
  // UNAVAILABLE when the store cannot be reached (a retry may succeed);
  // other codes as the implementation documents.
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;

  // Waits until every key in `keys` exists, then returns their values in the
  // order of `keys`. DEADLINE_EXCEEDED, naming the missing keys, when some
  // are still missing after `timeout`; UNAVAILABLE when the store cannot be
  // reached.
  virtual absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                                       absl::Duration timeout) = 0;
};

// A store shared by the threads of one process. Thread-safe.
class InMemoryRendezvousStore final : public RendezvousStore {
 public:
  InMemoryRendezvousStore() = default;
  InMemoryRendezvousStore(const InMemoryRendezvousStore&) = delete;
  InMemoryRendezvousStore& operator=(const InMemoryRendezvousStore&) = delete;

  // Never fails.
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

// A store in a folder that every rank can read and write (a local temporary
// folder for processes on one host, or a shared file system). Each key is a
// file, written to a temporary name and renamed, so a reader never sees half
// a value. Get polls the folder. Thread-safe and process-safe.
//
// The folder should be fresh for each group: keys left by an earlier group
// would be read as this group's.
class FileRendezvousStore final : public RendezvousStore {
 public:
  // `folder` is created on first Set when it does not exist.
  explicit FileRendezvousStore(std::string folder);
  FileRendezvousStore(const FileRendezvousStore&) = delete;
  FileRendezvousStore& operator=(const FileRendezvousStore&) = delete;

  // UNAVAILABLE (with the path and the system's reason) when the folder or
  // the file cannot be written.
  absl::Status Set(const std::string& key, const std::string& value) override;
  // DEADLINE_EXCEEDED as the interface says; UNAVAILABLE when an existing
  // key's file cannot be read.
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys,
                                               absl::Duration timeout) override;

  const std::string& folder() const { return folder_; }

 private:
  std::string PathFor(const std::string& key) const;

  const std::string folder_;
};

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_RENDEZVOUS_STORE_H_
