// Helpers shared by the tests: where Bazel puts data files and scratch space.
#ifndef MPT_TESTS_TEST_UTIL_H_
#define MPT_TESTS_TEST_UTIL_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace mpt::testing {

// The absolute path of a runfile given relative to the workspace root, e.g.
// "tests/testdata/t5_relu".
inline std::string DataPath(const std::string& relative) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return relative;
  return (std::filesystem::path(srcdir) / (workspace ? workspace : "mpt") / relative).string();
}

// A fresh, empty folder under the test's private temporary folder.
inline std::string FreshTempDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::filesystem::path p = std::filesystem::path(root ? root : "/tmp") / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace mpt::testing

#endif  // MPT_TESTS_TEST_UTIL_H_
