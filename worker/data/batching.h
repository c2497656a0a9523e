// Turning examples into padded tensor batches, and choosing which examples
// make each step's batch.
//
// Batch order is a pure function of (seed, step): a stage resumed from a
// checkpoint at step s draws exactly the batches an uninterrupted run draws
// from step s on, with no sampler state to save.
#ifndef MPT_WORKER_DATA_BATCHING_H_
#define MPT_WORKER_DATA_BATCHING_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace mpt {

struct TokenizedExample {
  std::vector<int> input_ids;   // EOS-terminated, truncated
  std::vector<int> target_ids;  // EOS-terminated, truncated
  int task_id = 0;              // index into the stage's task list
  std::string target;           // the reference answer text, for metrics
};

// The rows as one [N, longest] int64 matrix filled with `pad` after each
// row's end; `real_tokens` (optional) receives the number of row entries.
at::Tensor PadRows(const std::vector<const std::vector<int>*>& rows, int64_t pad,
                   int64_t* real_tokens = nullptr);

// Cuts `ids` to at most `max_length` tokens; when it cuts, the last kept
// token is replaced by `eos` so every sequence still ends in EOS.
std::vector<int> TruncateKeepEos(std::vector<int> ids, int max_length, int eos);

struct Batch {
  at::Tensor input_ids;       // [B, S] int64, pad-filled
  at::Tensor attention_mask;  // [B, S] int64, 1 for real tokens
  at::Tensor labels;          // [B, L] int64, -100 at padding
  at::Tensor task_ids;        // [B] int64
  int64_t input_tokens = 0;   // real input tokens
  int64_t target_tokens = 0;  // real target tokens
  int64_t size() const { return input_ids.defined() ? input_ids.size(0) : 0; }
};

// Pads to the longest input and target of the batch.
Batch Collate(const std::vector<const TokenizedExample*>& examples, int pad_id);

// How a multitask batch is drawn.
enum class TaskSampling {
  // Every example of every task once per epoch, shuffled together: tasks
  // appear in proportion to their sizes.
  kProportional,
  // Each slot picks a task uniformly at random, then an example of it
  // uniformly at random (with replacement).
  kUniform,
};

// Positions (task, index) of the global batch of `step`. `task_sizes[k]` is
// the number of training examples of task k (all > 0).
struct ExampleRef {
  int task = 0;
  int index = 0;
};
struct LengthBuckets;
std::vector<ExampleRef> SampleBatch(uint64_t seed, int64_t step, int batch_size,
                                    const std::vector<int>& task_sizes,
                                    TaskSampling sampling,
                                    const LengthBuckets* buckets = nullptr);

// Length bucketing (TrainSpec.length_bucket_batches), so that a batch pads
// little: with kProportional sampling, each epoch's order is cut into
// windows of `window_batches` consecutive batches (aligned to the batch
// grid); inside a window the examples are sorted by length (input, then
// target), cut into batches, and the batches put in a random order drawn
// from (seed, epoch, window). Every example is still seen once per epoch,
// and the batches remain a pure function of (seed, step). The few batches
// that straddle two epochs are drawn as without bucketing. kUniform
// sampling is not bucketed.
struct LengthBuckets {
  int window_batches = 0;  // < 2: off
  // keys[k][i]: the sort key of example i of task k.
  std::vector<std::vector<int64_t>> keys;
};

// The keys of `tasks`' examples: input length, then target length.
LengthBuckets MakeLengthBuckets(const std::vector<std::vector<TokenizedExample>>& tasks,
                                int window_batches);
// The same for one task.
LengthBuckets MakeLengthBuckets(const std::vector<TokenizedExample>& task, int window_batches);

// The part of a global batch that data-parallel rank `rank` of `world_size`
// trains on: slots rank, rank + W, rank + 2W, ...
std::vector<ExampleRef> ShardForRank(const std::vector<ExampleRef>& global, int rank,
                                     int world_size);

}  // namespace mpt

#endif  // MPT_WORKER_DATA_BATCHING_H_
