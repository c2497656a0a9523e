#include "worker/daemon/stage_log.h"

#include <sys/time.h>

#include <algorithm>
#include <utility>

namespace mpt {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";
constexpr absl::string_view kCut = " [cut]";

// The length of the well-formed UTF-8 character at s[i], or 0.
size_t CharLength(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t min;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

int64_t NowMicros() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
}

}  // namespace

std::string SanitizeLogText(absl::string_view text, int max_bytes) {
  const size_t limit = static_cast<size_t>(std::max(max_bytes, 16));
  std::string out;
  out.reserve(std::min(text.size(), limit) + kCut.size());
  for (size_t i = 0; i < text.size();) {
    size_t n = CharLength(text, i);
    absl::string_view piece = n == 0 ? kReplacement : text.substr(i, n);
    if (out.size() + piece.size() > limit) {
      out.append(kCut.data(), kCut.size());
      return out;
    }
    out.append(piece.data(), piece.size());
    i += n == 0 ? 1 : n;
  }
  return out;
}

StageLog::StageLog(StageLogOptions options) : options_(options) {}

StageLog::~StageLog() { Detach(); }

void StageLog::Attach() {
  absl::MutexLock lock(&attach_mu_);
  if (attached_) return;
  attached_ = true;
  AddLogListener(this);
}

void StageLog::Detach() {
  absl::MutexLock lock(&attach_mu_);
  if (!attached_) return;
  attached_ = false;
  RemoveLogListener(this);
}

void StageLog::Add(absl::string_view severity, int64_t time_micros, absl::string_view text) {
  Line line{0, time_micros, std::string(severity),
            SanitizeLogText(text, options_.max_line_bytes)};
  absl::MutexLock lock(&mu_);
  line.sequence = next_sequence_++;
  bytes_ += static_cast<int64_t>(line.text.size());
  lines_.push_back(std::move(line));
  TrimLocked();
}

void StageLog::TrimLocked() {
  while (!lines_.empty() && (static_cast<int64_t>(lines_.size()) > options_.max_lines ||
                             bytes_ > options_.max_bytes)) {
    bytes_ -= static_cast<int64_t>(lines_.front().text.size());
    lines_.pop_front();
    ++dropped_;
  }
}

void StageLog::AddProgress(const ProgressEvent& event) {
  if (event.kind == ProgressKind::kStep) {
    const int64_t every = std::max<int64_t>(options_.log_every_steps, 1);
    const bool last = event.total_steps > 0 && event.step >= event.total_steps;
    if (event.step > 1 && event.step % every != 0 && !last) return;
  }
  // Without the "[stage/task] " label: a reader sees the stage already.
  std::string line = FormatProgressLine(event);
  const size_t label_end = line.find("] ");
  if (!line.empty() && line[0] == '[' && label_end != std::string::npos) {
    line.erase(0, label_end + 2);
  }
  Add(event.kind == ProgressKind::kFailed ? "ERROR" : "INFO", NowMicros(), line);
}

void StageLog::OnLogLine(const LogRecord& record) {
  Add(SeverityName(record.severity), record.time_micros, record.text);
}

std::vector<mpt::v1::LogLine> StageLog::Pending(int max_lines, int64_t max_bytes) const {
  std::vector<mpt::v1::LogLine> out;
  absl::MutexLock lock(&mu_);
  int64_t bytes = 0;
  for (const Line& line : lines_) {
    if (static_cast<int>(out.size()) >= max_lines) break;
    if (!out.empty() && bytes + static_cast<int64_t>(line.text.size()) > max_bytes) break;
    bytes += static_cast<int64_t>(line.text.size());
    mpt::v1::LogLine& l = out.emplace_back();
    l.set_sequence(line.sequence);
    l.mutable_time()->set_seconds(line.time_micros / 1000000);
    l.mutable_time()->set_nanos(static_cast<int32_t>(line.time_micros % 1000000) * 1000);
    l.set_severity(line.severity);
    l.set_text(line.text);
  }
  return out;
}

bool StageLog::HasPending() const {
  absl::MutexLock lock(&mu_);
  return !lines_.empty();
}

void StageLog::Acknowledge(int64_t sequence) {
  absl::MutexLock lock(&mu_);
  while (!lines_.empty() && lines_.front().sequence <= sequence) {
    bytes_ -= static_cast<int64_t>(lines_.front().text.size());
    lines_.pop_front();
  }
}

int64_t StageLog::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return next_sequence_ - 1;
}

int64_t StageLog::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

}  // namespace mpt
