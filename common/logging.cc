#include "common/logging.h"

#include <sys/time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

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
  stream_ << prefix << Basename(file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string line = stream_.str();
  std::fwrite(line.data(), 1, line.size(), stderr);
  if (severity_ == Severity::kFatal) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace logging_internal
}  // namespace mpt
