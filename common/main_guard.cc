#include "common/main_guard.h"

#include <cstdio>
#include <exception>
#include <string>

namespace mpt {

int RunMain(int argc, char** argv, const std::function<int(int, char**)>& body) {
  const char* program = argc > 0 && argv[0] != nullptr ? argv[0] : "mpt";
  std::string name(program);
  const size_t slash = name.rfind('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
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

}  // namespace mpt
