#include "common/logging.h"

#include <sys/time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

namespace mpt {
namespace logging_internal {
namespace {

Severity MinSeverity() {
  static const Severity min = [] {
    const char* env = std::getenv("MPT_LOG_LEVEL");
    if (env == nullptr) return Severity::kInfo;
    if (std::strcmp(env, "DEBUG") == 0) return Severity::kDebug;
    if (std::strcmp(env, "WARNING") == 0) return Severity::kWarning;
    if (std::strcmp(env, "ERROR") == 0) return Severity::kError;
    return Severity::kInfo;
  }();
  return min;
}

const char* Basename(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

// Listeners, and a guard against a listener's own lines reaching listeners.
std::mutex& ListenersMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::vector<LogListener*>& Listeners() {
  static std::vector<LogListener*>* listeners = new std::vector<LogListener*>;
  return *listeners;
}
thread_local bool in_listener = false;

}  // namespace

bool Enabled(Severity severity) { return severity >= MinSeverity(); }

LogMessage::LogMessage(Severity severity, const char* file, int line)
    : severity_(severity) {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  localtime_r(&tv.tv_sec, &tm);
  char prefix[64];
  std::snprintf(prefix, sizeof(prefix), "%c%02d%02d %02d:%02d:%02d.%03d ",
                "DIWEF"[static_cast<int>(severity) + 1], tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(tv.tv_usec / 1000));
  stream_ << prefix;
  text_start_ = std::strlen(prefix);
  time_micros_ = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  stream_ << Basename(file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string line = stream_.str();
  std::fwrite(line.data(), 1, line.size(), stderr);
  if (!in_listener) {
    std::lock_guard<std::mutex> lock(ListenersMutex());
    if (!Listeners().empty()) {
      in_listener = true;
      LogRecord record;
      record.severity = severity_;
      record.time_micros = time_micros_;
      record.text = line.substr(text_start_, line.size() - text_start_ - 1);
      for (LogListener* listener : Listeners()) listener->OnLogLine(record);
      in_listener = false;
    }
  }
  if (severity_ == Severity::kFatal) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace logging_internal

const char* SeverityName(logging_internal::Severity severity) {
  switch (severity) {
    case logging_internal::Severity::kDebug:
      return "DEBUG";
    case logging_internal::Severity::kInfo:
      return "INFO";
    case logging_internal::Severity::kWarning:
      return "WARNING";
    case logging_internal::Severity::kError:
      return "ERROR";
    case logging_internal::Severity::kFatal:
      return "FATAL";
  }
  return "INFO";
}

void AddLogListener(LogListener* listener) {
  if (listener == nullptr) return;
  std::lock_guard<std::mutex> lock(logging_internal::ListenersMutex());
  logging_internal::Listeners().push_back(listener);
}

void RemoveLogListener(LogListener* listener) {
  std::lock_guard<std::mutex> lock(logging_internal::ListenersMutex());
  std::vector<LogListener*>& all = logging_internal::Listeners();
  for (auto it = all.begin(); it != all.end(); ++it) {
    if (*it == listener) {
      all.erase(it);
      return;
    }
  }
}

}  // namespace mpt
