// The frozen teachers' outputs for distillation, computed once per example
// and reused in every later epoch.
//
// A teacher is a frozen model with a frozen prompt, so its logits and final
// decoder hidden states at an example's target positions are a function of
// the example alone (task, input ids, target ids). The cache keeps, per
// example, the final hidden states at its real target positions only; a
// cached row's logits are the LM head of those states (`head`, the model's
// PromptedLanguageModel::LmHead), which is how the teacher computed them,
// at a small part of a teacher pass's cost (2 L V d FLOPs a row):
//
//   bytes per example = target_tokens * d_model * 4  (fp32)
//
// (T5-small, 16 target tokens: 32 KiB, so 1 GiB holds about 32,000
// examples). With `keep_logits` the logits are kept too and nothing is
// recomputed, at target_tokens * (vocab_size + d_model) * 4 bytes an
// example (2.1 MB: about 510 examples a GiB); RunDistillation chooses that
// when every training example fits.
// Once `max_bytes` are held, further examples are not stored: their rows are
// computed by the teachers at every step, as without a cache. A batch's
// missing rows are computed together, in one teacher pass on just those
// rows; the result is the same as a pass on the whole batch up to float
// rounding (the rows are padded to another width).
//
// Thread-safe: the thread ranks of one distillation (thread_group.h) share
// one cache. The teachers run outside the lock, so two ranks missing the
// same example may both compute it; the first to finish stores it.
#ifndef MPT_WORKER_TRAINING_TEACHER_CACHE_H_
#define MPT_WORKER_TRAINING_TEACHER_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "worker/data/batching.h"

namespace mpt {

struct TeacherOutputs {
  at::Tensor logits;  // [B, L, V] at the decoder's target positions
  at::Tensor hidden;  // [B, L, d]
};

// Runs the teachers on `rows` (a Batch of some of a step's examples, laid
// out as Collate lays them out); called with gradients off.
using TeacherForward = std::function<TeacherOutputs(const Batch& rows)>;
// The LM head: final hidden states [N, L, d] -> logits [N, L, V], as the
// teachers' forward computes them; called with gradients off.
using TeacherHead = std::function<at::Tensor(const at::Tensor& hidden)>;

class TeacherCache {
 public:
  // The default bound: 1 GiB.
  static constexpr int64_t kDefaultMaxBytes = int64_t{1} << 30;

  // `max_bytes` <= 0: nothing is cached (every step runs the teachers).
  explicit TeacherCache(int64_t max_bytes, bool keep_logits = false)
      : max_bytes_(max_bytes), keep_logits_(keep_logits) {}
  // The cache for a distillation over examples with `target_tokens` target
  // tokens in all: it keeps the logits too when all of them fit in
  // `max_bytes` with their logits (`element_size` bytes a value).
  static std::shared_ptr<TeacherCache> ForExamples(int64_t max_bytes, double target_tokens,
                                                   int64_t vocab_size, int64_t hidden_size,
                                                   int64_t element_size) {
    const double full = target_tokens * static_cast<double>(vocab_size + hidden_size) *
                        static_cast<double>(element_size);
    return std::make_shared<TeacherCache>(max_bytes, full <= static_cast<double>(max_bytes));
  }
  bool keep_logits() const { return keep_logits_; }

  TeacherCache(const TeacherCache&) = delete;
  TeacherCache& operator=(const TeacherCache&) = delete;

  // The teachers' outputs for every row of `batch` (on the CPU, as the
  // trainer collates it), [B, L, ...] with L = batch.labels.size(1); rows
  // beyond an example's target length are zero. Rows not cached are
  // computed with `forward` on the device the teachers run on, the logits
  // of cached rows with `head`. Throws what they throw (c10::Error).
  TeacherOutputs Get(const Batch& batch, const TeacherForward& forward, const TeacherHead& head);

  int64_t bytes() const {
    absl::MutexLock lock(&mu_);
    return bytes_;
  }
  int64_t hits() const {
    absl::MutexLock lock(&mu_);
    return hits_;
  }
  int64_t misses() const {
    absl::MutexLock lock(&mu_);
    return misses_;
  }

  // The cache key of row `i` (task id, input and target ids): exposed for
  // tests.
  static std::string RowKey(const Batch& batch, int64_t i);

 private:
  struct Entry {
    at::Tensor hidden;  // [len, d]
    at::Tensor logits;  // [len, V] with keep_logits, else undefined
  };
  // Stores `entry` under `key` unless it is there or would pass the bound.
  void Insert(const std::string& key, Entry entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_bytes_;
  const bool keep_logits_;
  mutable absl::Mutex mu_;
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// The rows `rows` of `batch`, trimmed to their longest input and target.
Batch SelectRows(const Batch& batch, const std::vector<int64_t>& rows);

}  // namespace mpt

#endif  // MPT_WORKER_TRAINING_TEACHER_CACHE_H_
