// The project's logging facade.
//
//   MPT_LOG(INFO) << "loaded " << n << " tensors";
//
// libtorch defines LOG and CHECK (through glog in Debian's build, through c10
// in the wheels), so this facade uses its own MPT_ prefix and depends on
// neither. Lines go to stderr as "I1126 09:30:00.123 file.cc:42] message".
// The minimum level comes from MPT_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR);
// INFO by default, so DEBUG lines (per-request detail on hot paths) cost
// one comparison unless asked for. Thread-safe: each line is written with one call.
//
// A LogListener added with AddLogListener() also receives every line that is
// written (the worker keeps a running stage's lines this way, to send them to
// the coordinator with its progress).
#ifndef MPT_COMMON_LOGGING_H_
#define MPT_COMMON_LOGGING_H_

#include <sstream>

#include <cstdint>
#include <string>

namespace mpt {
namespace logging_internal {

enum class Severity { kDebug = -1, kInfo = 0, kWarning = 1, kError = 2, kFatal = 3 };

bool Enabled(Severity severity);

}  // namespace logging_internal

// One line as it was written, for listeners.
struct LogRecord {
  logging_internal::Severity severity = logging_internal::Severity::kInfo;
  // Microseconds since the Unix epoch.
  int64_t time_micros = 0;
  // "file.cc:42] message": the line without its severity letter and time,
  // and without the newline.
  std::string text;
};

// "DEBUG", "INFO", "WARNING", "ERROR", "FATAL".
const char* SeverityName(logging_internal::Severity severity);

// Receives written lines. OnLogLine() is called on the thread that wrote
// the line, after it went to stderr, and must not log itself (a line it
// writes is not passed to any listener) nor block for long.
class LogListener {
 public:
  virtual ~LogListener() = default;
  virtual void OnLogLine(const LogRecord& record) = 0;
};

// Adds `listener` (not owned; null is ignored) until RemoveLogListener().
// Thread-safe. Once RemoveLogListener() returns the listener is neither
// running nor called again.
void AddLogListener(LogListener* listener);
void RemoveLogListener(LogListener* listener);

namespace logging_internal {

class LogMessage {
 public:
  LogMessage(Severity severity, const char* file, int line);
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  ~LogMessage();  // Writes the line; aborts for kFatal.
  std::ostream& stream() { return stream_; }

 private:
  Severity severity_;
  int64_t time_micros_ = 0;
  std::ostringstream stream_;
  // Where the text after the time starts in stream_.
  size_t text_start_ = 0;
};

// Swallows the stream expression when the level is disabled.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace logging_internal
}  // namespace mpt

#define MPT_LOG_SEVERITY_DEBUG ::mpt::logging_internal::Severity::kDebug
#define MPT_LOG_SEVERITY_INFO ::mpt::logging_internal::Severity::kInfo
#define MPT_LOG_SEVERITY_WARNING ::mpt::logging_internal::Severity::kWarning
#define MPT_LOG_SEVERITY_ERROR ::mpt::logging_internal::Severity::kError
#define MPT_LOG_SEVERITY_FATAL ::mpt::logging_internal::Severity::kFatal

#define MPT_LOG(level)                                                       \
  !::mpt::logging_internal::Enabled(MPT_LOG_SEVERITY_##level)                \
      ? (void)0                                                              \
      : ::mpt::logging_internal::Voidify() &                                 \
            ::mpt::logging_internal::LogMessage(MPT_LOG_SEVERITY_##level,    \
                                                __FILE__, __LINE__)          \
                .stream()

#endif  // MPT_COMMON_LOGGING_H_
