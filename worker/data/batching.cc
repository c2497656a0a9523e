#include "worker/data/batching.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "worker/model/labels.h"

namespace mpt {
namespace {

// SplitMix64: a well-mixed 64-bit value from a counter.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Mix(uint64_t a, uint64_t b) { return Mix(a ^ Mix(b)); }
uint64_t Mix(uint64_t a, uint64_t b, uint64_t c) { return Mix(Mix(a, b), c); }

// The shuffled order of `n` items in `epoch`.
std::vector<int> EpochOrder(uint64_t seed, int64_t epoch, int n) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(Mix(seed, static_cast<uint64_t>(epoch), 0x5eed));
  // Fisher-Yates with our own draw, so the order does not depend on the
  // standard library's distribution implementation.
  for (int i = n - 1; i > 0; --i) {
    int j = static_cast<int>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace

at::Tensor PadRows(const std::vector<const std::vector<int>*>& rows, int64_t pad,
                   int64_t* real_tokens) {
  size_t width = 0;
  for (const auto* r : rows) width = std::max(width, r->size());
  at::Tensor out = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)},
                            pad, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  int64_t real = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i]->size(); ++j) acc[i][j] = (*rows[i])[j];
    real += static_cast<int64_t>(rows[i]->size());
  }
  if (real_tokens != nullptr) *real_tokens = real;
  return out;
}

std::vector<int> TruncateKeepEos(std::vector<int> ids, int max_length, int eos) {
  if (max_length > 0 && static_cast<int>(ids.size()) > max_length) {
    ids.resize(max_length);
    ids.back() = eos;
  }
  return ids;
}

Batch Collate(const std::vector<const TokenizedExample*>& examples, int pad_id) {
  std::vector<const std::vector<int>*> inputs, targets;
  std::vector<int64_t> tasks;
  for (const TokenizedExample* e : examples) {
    inputs.push_back(&e->input_ids);
    targets.push_back(&e->target_ids);
    tasks.push_back(e->task_id);
  }
  Batch b;
  b.input_ids = PadRows(inputs, pad_id, &b.input_tokens);
  b.labels = PadRows(targets, kIgnoreIndex, &b.target_tokens);
  b.attention_mask = at::zeros_like(b.input_ids);
  auto mask = b.attention_mask.accessor<int64_t, 2>();
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (size_t j = 0; j < inputs[i]->size(); ++j) mask[i][j] = 1;
  }
  b.task_ids = at::tensor(tasks, at::kLong);
  return b;
}

std::vector<ExampleRef> SampleBatch(uint64_t seed, int64_t step, int batch_size,
                                    const std::vector<int>& task_sizes,
                                    TaskSampling sampling) {
  std::vector<ExampleRef> out;
  out.reserve(batch_size);
  if (sampling == TaskSampling::kUniform) {
    for (int i = 0; i < batch_size; ++i) {
      uint64_t h = Mix(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(i));
      int task = static_cast<int>(h % task_sizes.size());
      int index = static_cast<int>(Mix(h) % static_cast<uint64_t>(task_sizes[task]));
      out.push_back({task, index});
    }
    return out;
  }
  // Proportional: walk the concatenation of all tasks in a per-epoch order.
  std::vector<int> offsets(task_sizes.size() + 1, 0);
  for (size_t k = 0; k < task_sizes.size(); ++k) offsets[k + 1] = offsets[k] + task_sizes[k];
  const int total = offsets.back();
  int64_t cached_epoch = -1;
  std::vector<int> order;
  for (int i = 0; i < batch_size; ++i) {
    int64_t g = step * static_cast<int64_t>(batch_size) + i;
    int64_t epoch = g / total;
    if (epoch != cached_epoch) {
      order = EpochOrder(seed, epoch, total);
      cached_epoch = epoch;
    }
    int flat = order[g % total];
    int task = static_cast<int>(std::upper_bound(offsets.begin(), offsets.end(), flat) -
                                offsets.begin()) - 1;
    out.push_back({task, flat - offsets[task]});
  }
  return out;
}

std::vector<ExampleRef> ShardForRank(const std::vector<ExampleRef>& global, int rank,
                                     int world_size) {
  std::vector<ExampleRef> out;
  for (size_t i = rank; i < global.size(); i += world_size) out.push_back(global[i]);
  return out;
}

}  // namespace mpt
