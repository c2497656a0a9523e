#include "common/progress/progress.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

constexpr int kDefaultColumns = 100;

std::string Label(const ProgressEvent& event) {
  if (event.task.empty()) return event.stage;
  return absl::StrCat(event.stage, "/", event.task);
}

// "12", "12.3k", "4.56M".
std::string CompactCount(double value) {
  if (value < 1e3) return absl::StrFormat("%.0f", value);
  if (value < 1e6) return absl::StrFormat("%.1fk", value / 1e3);
  return absl::StrFormat("%.2fM", value / 1e6);
}

std::string Percent(int64_t step, int64_t total) {
  return absl::StrFormat("%.1f%%", 100.0 * static_cast<double>(step) /
                                       static_cast<double>(total));
}

bool IsTerminal(ProgressKind kind) {
  return kind == ProgressKind::kFinished || kind == ProgressKind::kFailed;
}

}  // namespace

absl::string_view ProgressKindName(ProgressKind kind) {
  switch (kind) {
    case ProgressKind::kStarted:
      return "STARTED";
    case ProgressKind::kStep:
      return "STEP";
    case ProgressKind::kEval:
      return "EVAL";
    case ProgressKind::kCheckpoint:
      return "CHECKPOINT";
    case ProgressKind::kFinished:
      return "FINISHED";
    case ProgressKind::kFailed:
      return "FAILED";
    case ProgressKind::kState:
      return "STATE";
  }
  return "UNKNOWN";
}

double EstimateEtaSeconds(double elapsed_seconds, int64_t steps_done,
                          int64_t total_steps) {
  if (steps_done <= 0 || total_steps <= 0 || !std::isfinite(elapsed_seconds) ||
      elapsed_seconds < 0) {
    return -1;
  }
  if (steps_done >= total_steps) return 0;
  return elapsed_seconds / static_cast<double>(steps_done) *
         static_cast<double>(total_steps - steps_done);
}

void EtaEstimator::Observe(int64_t step, double elapsed_seconds) {
  if (!has_baseline_) {
    has_baseline_ = true;
    first_step_ = step;
    first_elapsed_ = elapsed_seconds;
  }
  last_step_ = step;
  last_elapsed_ = elapsed_seconds;
}

double EtaEstimator::EtaSeconds(int64_t total_steps) const {
  if (!has_baseline_) return -1;
  if (last_step_ > first_step_) {
    double eta = EstimateEtaSeconds(last_elapsed_ - first_elapsed_,
                                    last_step_ - first_step_,
                                    total_steps - first_step_);
    if (eta >= 0) return eta;
  }
  return EstimateEtaSeconds(last_elapsed_, last_step_, total_steps);
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

void FanOutProgressSink::AddSubscriber(std::shared_ptr<ProgressSink> sink) {
  if (sink == nullptr) return;
  absl::MutexLock lock(&mu_);
  subscribers_.push_back(std::move(sink));
}

bool FanOutProgressSink::RemoveSubscriber(const ProgressSink* sink) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(
      subscribers_.begin(), subscribers_.end(),
      [sink](const std::shared_ptr<ProgressSink>& s) { return s.get() == sink; });
  if (it == subscribers_.end()) return false;
  subscribers_.erase(it);
  return true;
}

size_t FanOutProgressSink::num_subscribers() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

void FanOutProgressSink::OnEvent(const ProgressEvent& event) {
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<ProgressSink>& sink : subscribers_) {
    sink->OnEvent(event);
  }
}

std::string FormatProgressBar(const ProgressEvent& event, int bar_width) {
  std::string line = Label(event);
  if (event.total_steps > 0) {
    int64_t step = std::clamp<int64_t>(event.step, 0, event.total_steps);
    int width = std::max(bar_width, 1);
    int filled = static_cast<int>(step * width / event.total_steps);
    std::string bar(filled, '=');
    if (filled < width) {
      bar.push_back('>');
      bar.append(width - filled - 1, ' ');
    }
    int digits = static_cast<int>(absl::StrCat(event.total_steps).size());
    absl::StrAppend(&line, " [", bar, "] ",
                    absl::StrFormat("%*d/%d %3d%%", digits, event.step,
                                    event.total_steps,
                                    static_cast<int>(100 * step /
                                                     event.total_steps)));
  } else {
    absl::StrAppend(&line, " step ", event.step);
  }
  if (!event.losses.empty()) {
    absl::StrAppend(&line, " | ", event.losses.front().first, " ",
                    absl::StrFormat("%.4g", event.losses.front().second));
  }
  if (event.tokens_per_second > 0) {
    absl::StrAppend(&line, " | ", CompactCount(event.tokens_per_second),
                    " tok/s");
  }
  if (event.eta_seconds >= 0) {
    absl::StrAppend(&line, " | ETA ", FormatDuration(event.eta_seconds));
  }
  return line;
}

std::string FormatProgressLine(const ProgressEvent& event) {
  // A state change says only what the state became.
  if (event.kind == ProgressKind::kState) {
    return absl::StrCat("[", Label(event), "] ", event.message);
  }
  std::string line =
      absl::StrCat("[", Label(event), "] ", ProgressKindName(event.kind));
  if (event.total_steps > 0) {
    absl::StrAppend(&line, " ", event.step, "/", event.total_steps, " (",
                    Percent(event.step, event.total_steps), ")");
  } else if (event.step > 0) {
    absl::StrAppend(&line, " ", event.step);
  }
  for (const auto& [name, value] : event.losses) {
    absl::StrAppend(&line, " ", name, "=", absl::StrFormat("%.4g", value));
  }
  if (event.learning_rate > 0) {
    absl::StrAppend(&line, " lr=", absl::StrFormat("%.2e", event.learning_rate));
  }
  if (event.tokens_per_second > 0) {
    absl::StrAppend(&line, " tok/s=",
                    absl::StrFormat("%.0f", event.tokens_per_second));
  }
  for (const auto& [name, value] : event.metrics) {
    absl::StrAppend(&line, " ", name, "=", absl::StrFormat("%.4f", value));
  }
  if (event.elapsed_seconds > 0) {
    absl::StrAppend(&line, " elapsed=", FormatDuration(event.elapsed_seconds));
  }
  if (event.eta_seconds >= 0 && !IsTerminal(event.kind)) {
    absl::StrAppend(&line, " eta=", FormatDuration(event.eta_seconds));
  }
  if (!event.message.empty()) absl::StrAppend(&line, ": ", event.message);
  return line;
}

std::unique_ptr<TerminalProgressSink> TerminalProgressSink::ForStderr(
    TerminalProgressOptions options) {
  bool live = ::isatty(STDERR_FILENO) == 1;
  if (live && options.max_columns <= 0) {
    struct winsize size;
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
      options.max_columns = size.ws_col;
    }
  }
  return std::make_unique<TerminalProgressSink>(&std::cerr, live, options);
}

TerminalProgressSink::TerminalProgressSink(std::ostream* out, bool live,
                                           TerminalProgressOptions options)
    : live_(live),
      options_(options),
      columns_(options.max_columns > 0 ? options.max_columns
                                       : kDefaultColumns),
      out_(out) {}

TerminalProgressSink::~TerminalProgressSink() {
  absl::MutexLock lock(&mu_);
  if (!bar_.empty()) {
    *out_ << "\n";
    out_->flush();
  }
}

void TerminalProgressSink::OnEvent(const ProgressEvent& event) {
  absl::MutexLock lock(&mu_);
  if (live_) {
    WriteLive(event);
  } else {
    WritePlain(event);
  }
  out_->flush();
}

void TerminalProgressSink::WritePlain(const ProgressEvent& event) {
  if (event.kind == ProgressKind::kStep) {
    int64_t every = std::max<int64_t>(options_.log_every_steps, 1);
    bool last = event.total_steps > 0 && event.step >= event.total_steps;
    if (event.step > 1 && event.step % every != 0 && !last) return;
  }
  *out_ << FormatProgressLine(event) << "\n";
}

void TerminalProgressSink::WriteLive(const ProgressEvent& event) {
  size_t max_chars = static_cast<size_t>(std::max(columns_ - 1, 1));
  if (event.kind == ProgressKind::kStep) {
    bool edge = event.step <= 1 ||
                (event.total_steps > 0 && event.step >= event.total_steps);
    if (!bar_.empty() && !edge &&
        event.elapsed_seconds - bar_elapsed_ < options_.min_redraw_seconds) {
      return;
    }
    bar_ = FormatProgressBar(event, options_.bar_width);
    if (bar_.size() > max_chars) bar_.resize(max_chars);
    bar_elapsed_ = event.elapsed_seconds;
    // "\033[K" clears what is left of a longer previous line.
    *out_ << "\r" << bar_ << "\033[K";
    return;
  }
  if (!bar_.empty()) *out_ << "\r\033[K";
  *out_ << FormatProgressLine(event) << "\n";
  if (IsTerminal(event.kind)) {
    bar_.clear();
  } else if (!bar_.empty()) {
    *out_ << bar_;
  }
}

std::string ProgressEventToJson(const ProgressEvent& event) {
  using Json = nlohmann::ordered_json;
  Json root;
  root["stage"] = event.stage;
  root["task"] = event.task;
  root["kind"] = std::string(ProgressKindName(event.kind));
  root["step"] = event.step;
  root["total_steps"] = event.total_steps;
  Json losses = Json::object();
  for (const auto& [name, value] : event.losses) losses[name] = value;
  root["losses"] = std::move(losses);
  root["learning_rate"] = event.learning_rate;
  root["tokens_per_second"] = event.tokens_per_second;
  Json metrics = Json::object();
  for (const auto& [name, value] : event.metrics) metrics[name] = value;
  root["metrics"] = std::move(metrics);
  root["elapsed_seconds"] = event.elapsed_seconds;
  if (event.eta_seconds >= 0) {
    root["eta_seconds"] = event.eta_seconds;
  } else {
    root["eta_seconds"] = nullptr;
  }
  root["message"] = event.message;
  return root.dump(-1, ' ', false, Json::error_handler_t::replace);
}

absl::StatusOr<std::unique_ptr<JsonLinesProgressSink>>
JsonLinesProgressSink::OpenFile(const std::string& path) {
  errno = 0;
  auto file = std::make_unique<std::ofstream>(path, std::ios::app);
  if (!file->is_open()) {
    int err = errno;
    std::string message =
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(message);
    }
    return absl::InternalError(message);
  }
  return std::unique_ptr<JsonLinesProgressSink>(
      new JsonLinesProgressSink(std::move(file)));
}

JsonLinesProgressSink::JsonLinesProgressSink(std::ostream* out) : out_(out) {}

JsonLinesProgressSink::JsonLinesProgressSink(
    std::unique_ptr<std::ofstream> file)
    : file_(std::move(file)), out_(file_.get()) {}

void JsonLinesProgressSink::OnEvent(const ProgressEvent& event) {
  std::string line = ProgressEventToJson(event);
  line.push_back('\n');
  absl::MutexLock lock(&mu_);
  out_->write(line.data(), static_cast<std::streamsize>(line.size()));
  out_->flush();
  if (!*out_ && !reported_error_) {
    reported_error_ = true;
    MPT_LOG(WARNING) << "progress events could not be written; later events "
                        "are dropped too";
  }
}

}  // namespace mpt
