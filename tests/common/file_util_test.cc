// The one error contract of OpenRegularFile / ReadFile, for every kind of
// path a user or a shared file system can hand over.
#include "common/file_util.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;

std::string Dir() { return ::testing::TempDir(); }

TEST(ReadFile, ReadsARegularFile) {
  const std::string path = Dir() + "/plain.txt";
  ASSERT_TRUE(WriteFileAtomically(path, std::string("a\0b", 3)).ok());
  absl::StatusOr<std::string> text = ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, std::string("a\0b", 3));
}

TEST(ReadFile, MissingIsNotFound) {
  absl::StatusOr<std::string> text = ReadFile(Dir() + "/nope/none.txt");
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("nope/none.txt"));
}

TEST(ReadFile, FifoIsRefusedWithoutBlocking) {
  const std::string path = Dir() + "/fifo";
  ::unlink(path.c_str());
  ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
  absl::StatusOr<std::string> text = ReadFile(path);  // would block forever if opened
  EXPECT_EQ(text.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("a FIFO"));
  absl::StatusOr<int> fd = OpenRegularFile(path);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ReadFile, FolderIsFailedPrecondition) {
  absl::StatusOr<std::string> text = ReadFile(Dir());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("a folder"));
}

TEST(ReadFile, SocketIsFailedPrecondition) {
  const std::string path = Dir() + "/sock";
  ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) GTEST_SKIP() << "temp path too long for a socket";
  path.copy(addr.sun_path, path.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(ReadFile(path).status().code(), absl::StatusCode::kFailedPrecondition);
  ::close(fd);
}

TEST(ReadFile, SymlinkLoopAndLongNameAreInvalidArgument) {
  const std::string a = Dir() + "/loop_a", b = Dir() + "/loop_b";
  ::unlink(a.c_str());
  ::unlink(b.c_str());
  ASSERT_EQ(::symlink(a.c_str(), b.c_str()), 0);
  ASSERT_EQ(::symlink(b.c_str(), a.c_str()), 0);
  EXPECT_EQ(ReadFile(a).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ReadFile(a).status().message()), HasSubstr("loop_a"));
  const std::string long_name = Dir() + "/" + std::string(300, 'x');
  EXPECT_EQ(ReadFile(long_name).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReadFile, UnsearchableFolderIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every folder";
  const std::string dir = Dir() + "/locked";
  ::mkdir(dir.c_str(), 0755);
  ASSERT_TRUE(WriteFileAtomically(dir + "/f", "x").ok());
  ASSERT_EQ(::chmod(dir.c_str(), 0), 0);
  EXPECT_EQ(ReadFile(dir + "/f").status().code(), absl::StatusCode::kPermissionDenied);
  ::chmod(dir.c_str(), 0755);
}

TEST(ReadFile, LargerThanTheLimitIsFailedPrecondition) {
  const std::string path = Dir() + "/big.txt";
  ASSERT_TRUE(WriteFileAtomically(path, std::string(100, 'x')).ok());
  absl::StatusOr<std::string> text = ReadFile(path, 99);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("larger than the limit"));
  EXPECT_TRUE(ReadFile(path, 100).ok());
}

}  // namespace
}  // namespace mpt
