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
#ifndef MPT_COMMON_LOGGING_H_
#define MPT_COMMON_LOGGING_H_

#include <sstream>

namespace mpt {
namespace logging_internal {

enum class Severity { kDebug = -1, kInfo = 0, kWarning = 1, kError = 2, kFatal = 3 };

bool Enabled(Severity severity);

class LogMessage {
 public:
  LogMessage(Severity severity, const char* file, int line);
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  ~LogMessage();  // Writes the line; aborts for kFatal.
  std::ostream& stream() { return stream_; }

 private:
  Severity severity_;
  std::ostringstream stream_;
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
