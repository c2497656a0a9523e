#include "common/main_guard.h"

#include <cstdio>
#include <exception>
#include <string>

#include "absl/flags/parse.h"

namespace mpt {

namespace {

std::string ProgramName(int argc, char** argv) {
  std::string name(argc > 0 && argv[0] != nullptr ? argv[0] : "mpt");
  const size_t slash = name.rfind('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
  return name;
}

}  // namespace

int RunMain(int argc, char** argv, const std::function<int(int, char**)>& body) {
  const std::string name = ProgramName(argc, argv);
  try {
    return body(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", name.c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: internal error: an unknown exception\n", name.c_str());
  }
  std::fflush(stderr);
  return kExitInternalError;
}

int RunFlagsMain(int argc, char** argv, const std::function<absl::Status()>& work) {
  return RunMain(argc, argv, [&work](int argc, char** argv) {
    absl::ParseCommandLine(argc, argv);
    const absl::Status status = work();
    if (status.ok()) return 0;
    std::fprintf(stderr, "%s: %s\n", ProgramName(argc, argv).c_str(),
                 std::string(status.message()).c_str());
    return 1;
  });
}

}  // namespace mpt
