#include "worker/training/teacher_cache.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

namespace mpt {
namespace {

constexpr int64_t kIgnoreLabel = -100;

// Real entries of row `i`: the attention mask's ones (inputs) or the
// labels that are not ignored (targets); both are prefixes of the row.
int64_t InputLength(const Batch& b, int64_t i) {
  return b.attention_mask[i].sum().item<int64_t>();
}
int64_t TargetLength(const Batch& b, int64_t i) {
  return b.labels[i].ne(kIgnoreLabel).sum().item<int64_t>();
}

void AppendInts(std::string* out, const int64_t* data, int64_t n) {
  out->append(reinterpret_cast<const char*>(&n), sizeof(n));
  out->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * sizeof(int64_t));
}

}  // namespace

std::string TeacherCache::RowKey(const Batch& batch, int64_t i) {
  const at::Tensor input = batch.input_ids[i].contiguous();
  const at::Tensor labels = batch.labels[i].contiguous();
  std::string key;
  const int64_t task = batch.task_ids[i].item<int64_t>();
  key.append(reinterpret_cast<const char*>(&task), sizeof(task));
  AppendInts(&key, input.data_ptr<int64_t>(), InputLength(batch, i));
  AppendInts(&key, labels.data_ptr<int64_t>(), TargetLength(batch, i));
  return key;
}

Batch SelectRows(const Batch& batch, const std::vector<int64_t>& rows) {
  at::Tensor index = at::tensor(rows, at::kLong);
  Batch out;
  int64_t input_width = 1, target_width = 1;
  for (int64_t r : rows) {
    input_width = std::max(input_width, InputLength(batch, r));
    target_width = std::max(target_width, TargetLength(batch, r));
  }
  out.input_ids = batch.input_ids.index_select(0, index).narrow(1, 0, input_width).contiguous();
  out.attention_mask =
      batch.attention_mask.index_select(0, index).narrow(1, 0, input_width).contiguous();
  out.labels = batch.labels.index_select(0, index).narrow(1, 0, target_width).contiguous();
  out.task_ids = batch.task_ids.index_select(0, index.to(batch.task_ids.device()));
  out.input_tokens = out.attention_mask.sum().item<int64_t>();
  out.target_tokens = out.labels.ne(kIgnoreLabel).sum().item<int64_t>();
  return out;
}

void TeacherCache::Insert(const std::string& key, Entry entry) {
  if (!keep_logits_) entry.logits = at::Tensor();
  int64_t cost = entry.hidden.numel() * static_cast<int64_t>(entry.hidden.element_size());
  if (entry.logits.defined()) {
    cost += entry.logits.numel() * static_cast<int64_t>(entry.logits.element_size());
  }
  if (bytes_ + cost > max_bytes_ || entries_.contains(key)) return;
  entries_[key] = std::move(entry);
  bytes_ += cost;
}

TeacherOutputs TeacherCache::Get(const Batch& batch, const TeacherForward& forward,
                                 const TeacherHead& head) {
  const int64_t rows = batch.size();
  const int64_t width = batch.labels.size(1);
  if (max_bytes_ <= 0) {
    {
      absl::MutexLock lock(&mu_);
      misses_ += rows;
    }
    return forward(batch);
  }
  std::vector<std::string> keys(rows);
  for (int64_t i = 0; i < rows; ++i) keys[i] = RowKey(batch, i);
  // Copies of the entries found (tensor handles: entries are never changed
  // once stored, and the map may move them when another thread inserts).
  std::vector<std::optional<Entry>> found(rows);
  std::vector<int64_t> missing;
  {
    absl::MutexLock lock(&mu_);
    for (int64_t i = 0; i < rows; ++i) {
      auto it = entries_.find(keys[i]);
      if (it != entries_.end()) {
        found[i] = it->second;
      } else {
        missing.push_back(i);
      }
    }
    hits_ += rows - static_cast<int64_t>(missing.size());
    misses_ += static_cast<int64_t>(missing.size());
  }
  if (static_cast<int64_t>(missing.size()) == rows) {
    // Nothing cached: one pass on the whole batch, as without a cache.
    TeacherOutputs out = forward(batch);
    absl::MutexLock lock(&mu_);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t len = TargetLength(batch, i);
      Insert(keys[i], {out.hidden[i].narrow(0, 0, len).clone(),
                       keep_logits_ ? out.logits[i].narrow(0, 0, len).clone() : at::Tensor()});
    }
    return out;
  }
  TeacherOutputs computed;
  if (!missing.empty()) computed = forward(SelectRows(batch, missing));
  // Cached rows without stored logits: their real target positions only
  // (no padding), laid end to end as one sequence through the LM head in one
  // call. The head works position by position, so this is what it gives
  // them in the batch.
  std::vector<int64_t> cached;
  std::vector<at::Tensor> to_head;
  for (int64_t i = 0; i < rows; ++i) {
    if (!found[i].has_value()) continue;
    cached.push_back(i);
    if (!found[i]->logits.defined()) to_head.push_back(found[i]->hidden);
  }
  const at::Tensor& like_hidden = found[cached.front()]->hidden;
  at::Tensor headed;  // [sum of the rows' lengths, V]
  if (!to_head.empty()) headed = head(at::cat(to_head, 0).unsqueeze(0)).squeeze(0);
  const at::Tensor& like_logits = headed.defined() ? headed : found[cached.front()]->logits;
  TeacherOutputs out;
  out.logits = at::zeros({rows, width, like_logits.size(-1)}, like_logits.options());
  out.hidden = at::zeros({rows, width, like_hidden.size(-1)}, like_hidden.options());
  int64_t headed_from = 0;
  for (const int64_t i : cached) {
    const int64_t len = found[i]->hidden.size(0);
    out.hidden[i].narrow(0, 0, len).copy_(found[i]->hidden);
    if (found[i]->logits.defined()) {
      out.logits[i].narrow(0, 0, len).copy_(found[i]->logits);
    } else {
      out.logits[i].narrow(0, 0, len).copy_(headed.narrow(0, headed_from, len));
      headed_from += len;
    }
  }
  std::vector<Entry> fresh;
  for (size_t j = 0; j < missing.size(); ++j) {
    const int64_t i = missing[j];
    const int64_t len = TargetLength(batch, i);
    at::Tensor logits = computed.logits[static_cast<int64_t>(j)].narrow(0, 0, len);
    at::Tensor hidden = computed.hidden[static_cast<int64_t>(j)].narrow(0, 0, len);
    out.logits[i].narrow(0, 0, len).copy_(logits);
    out.hidden[i].narrow(0, 0, len).copy_(hidden);
    fresh.push_back({hidden.clone(), keep_logits_ ? logits.clone() : at::Tensor()});
  }
  absl::MutexLock lock(&mu_);
  for (size_t j = 0; j < missing.size(); ++j) Insert(keys[missing[j]], std::move(fresh[j]));
  return out;
}

}  // namespace mpt
