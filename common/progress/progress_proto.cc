#include "common/progress/progress_proto.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace mpt {

mpt::v1::Progress ProgressToProto(const ProgressEvent& event) {
  mpt::v1::Progress p;
  p.set_stage(event.stage);
  p.set_task(event.task);
  p.set_step(event.step);
  p.set_total_steps(event.total_steps);
  for (const auto& [name, value] : event.losses) (*p.mutable_losses())[name] = value;
  p.set_learning_rate(event.learning_rate);
  p.set_tokens_per_second(event.tokens_per_second);
  for (const auto& [name, value] : event.metrics) (*p.mutable_metrics())[name] = value;
  p.set_eta_seconds(event.eta_seconds < 0 ? -1 : event.eta_seconds);
  return p;
}

ProgressEvent ProgressFromProto(const mpt::v1::Progress& progress, ProgressKind kind) {
  ProgressEvent e;
  e.kind = kind;
  e.stage = progress.stage();
  e.task = progress.task();
  e.step = progress.step();
  e.total_steps = progress.total_steps();
  for (const auto& [name, value] : progress.losses()) e.losses.emplace_back(name, value);
  std::sort(e.losses.begin(), e.losses.end(), [](const auto& a, const auto& b) {
    if ((a.first == "loss") != (b.first == "loss")) return a.first == "loss";
    return a.first < b.first;
  });
  e.learning_rate = progress.learning_rate();
  e.tokens_per_second = progress.tokens_per_second();
  for (const auto& [name, value] : progress.metrics()) e.metrics.emplace_back(name, value);
  std::sort(e.metrics.begin(), e.metrics.end());
  e.eta_seconds = progress.eta_seconds();
  return e;
}

}  // namespace mpt
