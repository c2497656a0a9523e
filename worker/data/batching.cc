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

LengthBuckets MakeLengthBuckets(const std::vector<std::vector<TokenizedExample>>& tasks,
                                int window_batches) {
  LengthBuckets out;
  out.window_batches = window_batches;
  for (const auto& task : tasks) {
    out.keys.push_back(std::move(MakeLengthBuckets(task, window_batches).keys[0]));
  }
  return out;
}

LengthBuckets MakeLengthBuckets(const std::vector<TokenizedExample>& task, int window_batches) {
  LengthBuckets out;
  out.window_batches = window_batches;
  out.keys.emplace_back();
  for (const TokenizedExample& e : task) {
    out.keys.back().push_back((static_cast<int64_t>(e.input_ids.size()) << 32) +
                              static_cast<int64_t>(e.target_ids.size()));
  }
  return out;
}

std::vector<ExampleRef> SampleBatch(uint64_t seed, int64_t step, int batch_size,
                                    const std::vector<int>& task_sizes,
                                    TaskSampling sampling, const LengthBuckets* buckets) {
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
  auto ref = [&](int flat) {
    int task = static_cast<int>(std::upper_bound(offsets.begin(), offsets.end(), flat) -
                                offsets.begin()) - 1;
    return ExampleRef{task, flat - offsets[task]};
  };
  const int64_t B = batch_size;
  if (buckets != nullptr && buckets->window_batches >= 2 && B > 0) {
    // The epoch of the batch's first slot and the part of it that whole
    // batches cover: [first, last) in global positions, multiples of B.
    const int64_t g = step * B;
    const int64_t epoch = g / total;
    const int64_t first = (epoch * total + B - 1) / B * B;
    const int64_t last = (epoch + 1) * total / B * B;
    if (g >= first && g + B <= last) {
      const int64_t window_size = B * buckets->window_batches;
      const int64_t window = (g - first) / window_size;
      const int64_t begin = first + window * window_size;
      const int64_t end = std::min(last, begin + window_size);
      const std::vector<int> order = EpochOrder(seed, epoch, total);
      std::vector<int> flat;
      flat.reserve(end - begin);
      for (int64_t p = begin; p < end; ++p) flat.push_back(order[p - epoch * total]);
      auto key = [&](int f) {
        const ExampleRef r = ref(f);
        return buckets->keys[r.task][r.index];
      };
      std::stable_sort(flat.begin(), flat.end(), [&](int a, int b) { return key(a) < key(b); });
      // The window's batches in a random order (Fisher-Yates, own draw).
      const int n = static_cast<int>((end - begin) / B);
      std::vector<int> batches(n);
      std::iota(batches.begin(), batches.end(), 0);
      std::mt19937_64 rng(Mix(seed, static_cast<uint64_t>(epoch), Mix(static_cast<uint64_t>(window),
                                                                       0xb0c4e7)));
      for (int i = n - 1; i > 0; --i) {
        int j = static_cast<int>(rng() % static_cast<uint64_t>(i + 1));
        std::swap(batches[i], batches[j]);
      }
      const int64_t chunk = batches[(g - begin) / B];
      for (int64_t i = 0; i < B; ++i) out.push_back(ref(flat[chunk * B + i]));
      return out;
    }
  }
  int64_t cached_epoch = -1;
  std::vector<int> order;
  for (int i = 0; i < batch_size; ++i) {
    int64_t g = step * static_cast<int64_t>(batch_size) + i;
    int64_t epoch = g / total;
    if (epoch != cached_epoch) {
      order = EpochOrder(seed, epoch, total);
      cached_epoch = epoch;
    }
    out.push_back(ref(order[g % total]));
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
