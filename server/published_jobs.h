// The jobs GetJob answers from memory: a copy of each unfinished job as its
// newest committed write left it. Jobs not written since the coordinator
// loaded its state are not here: the store holds exactly what memory does. Writers publish after their commit is
// durable, so a reader never sees a change that could still be rolled back,
// and never waits for a commit or for the coordinator's mutex.
//
// Thread-safety: every method may be called from any thread; readers share
// a reader lock.
#ifndef MPT_SERVER_PUBLISHED_JOBS_H_
#define MPT_SERVER_PUBLISHED_JOBS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {

class PublishedJobs {
 public:
  // Stores `job` as of commit `version` unless a newer version is stored.
  void Publish(int64_t version, mpt::v1::Job job) ABSL_LOCKS_EXCLUDED(mu_);
  // The same for a job already shared; `serialized`, when set, must be
  // `*job` serialized (FindSerialized() then returns it as it is).
  void Publish(int64_t version, std::shared_ptr<const mpt::v1::Job> job,
               std::shared_ptr<const std::string> serialized = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // Shows `progress` as the job's and its stage `stage_id`'s, at once:
  // progress is not durable anyway (the event rate limit drops reports).
  // Nothing happens when the job is not published.
  void SetProgress(const std::string& name, const std::string& stage_id,
                   const mpt::v1::Progress& progress) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  void Clear() ABSL_LOCKS_EXCLUDED(mu_);
  // The published job, or nullptr when none is (finished, unknown, or not
  // yet committed).
  std::shared_ptr<const mpt::v1::Job> Find(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The published job serialized, or nullptr as Find(). Serialized once per
  // published version (on the first read after it), outside the lock.
  std::shared_ptr<const std::string> FindSerialized(const std::string& name)
      ABSL_LOCKS_EXCLUDED(mu_);
  // As FindSerialized(), but nullptr unless the published job is in `state`.
  std::shared_ptr<const std::string> FindSerializedInState(const std::string& name,
                                                           mpt::v1::JobState state)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  std::shared_ptr<const std::string> FindSerializedIf(const std::string& name,
                                                      std::optional<mpt::v1::JobState> state)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Entry {
    int64_t version = 0;
    std::shared_ptr<const mpt::v1::Job> job;
    // `job` serialized; nullptr until the first FindSerialized() of it.
    std::shared_ptr<const std::string> serialized;
  };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mpt

#endif  // MPT_SERVER_PUBLISHED_JOBS_H_
