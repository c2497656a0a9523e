// Helpers shared by the tests: where Bazel puts data files and scratch space.
#ifndef MPT_TESTS_TEST_UTIL_H_
#define MPT_TESTS_TEST_UTIL_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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

// The whole file ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Replaces the file's contents with `bytes`.
inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace mpt::testing

#endif  // MPT_TESTS_TEST_UTIL_H_
