// The one error contract of OpenRegularFile / ReadFile, for every kind of
// path a user or a shared file system can hand over.
#include "common/file_util.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

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

// ---- What a download may replace (CheckFolderReplaceable) -----------------

const ReplaceableContents kAdapter{{"adapter_config.json", "adapter_model.safetensors"},
                                   "an adapter folder"};

void Put(const std::string& path, const std::string& contents = "x") {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(WriteFileAtomically(path, contents).ok());
}

// The relative paths and contents of every file under `root`.
std::string Listing(const std::string& root) {
  std::string out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    out += fs::relative(e.path(), root).string();
    if (e.is_regular_file()) out += "=" + ReadFile(e.path().string()).value_or("?");
    out += "\n";
  }
  return out;
}

TEST(CheckFolderReplaceable, AMissingOrEmptyFolderOrAnEarlierAdapterMayBeReplaced) {
  const std::string dir = testing::FreshTempDir("replaceable_ok");
  EXPECT_TRUE(CheckFolderReplaceable(dir + "/new", kAdapter, "--out").ok());
  EXPECT_TRUE(CheckFolderReplaceable(dir + "/new/deeper/still", kAdapter, "--out").ok());
  fs::create_directories(dir + "/empty");
  EXPECT_TRUE(CheckFolderReplaceable(dir + "/empty", kAdapter, "--out").ok());
  Put(dir + "/adapter/adapter_config.json");
  Put(dir + "/adapter/adapter_model.safetensors");
  EXPECT_TRUE(CheckFolderReplaceable(dir + "/adapter", kAdapter, "--out").ok());
  Put(dir + "/half/adapter_config.json");
  EXPECT_TRUE(CheckFolderReplaceable(dir + "/half", kAdapter, "--out").ok());
}

TEST(CheckFolderReplaceable, AFolderWithOtherFilesIsRefusedNamingThem) {
  const std::string dir = testing::FreshTempDir("replaceable_other");
  Put(dir + "/adapters/old_run/adapter_model.safetensors");
  Put(dir + "/adapters/README.txt");
  absl::Status s = CheckFolderReplaceable(dir + "/adapters", kAdapter, "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("--out: " + dir + "/adapters is not empty and is not an adapter folder "
                        "(it holds README.txt, old_run/); give a new or empty folder"));
  // An adapter's files plus anything else, or a folder named like one.
  Put(dir + "/mixed/adapter_config.json");
  Put(dir + "/mixed/adapter_model.safetensors");
  Put(dir + "/mixed/notes.md");
  s = CheckFolderReplaceable(dir + "/mixed", kAdapter, "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("(it holds notes.md)"));
  fs::create_directories(dir + "/named/adapter_config.json");
  EXPECT_THAT(std::string(CheckFolderReplaceable(dir + "/named", kAdapter, "--out").message()),
              HasSubstr("(it holds adapter_config.json/)"));
  // A hidden file counts; many entries are summed up.
  Put(dir + "/hidden/.keep");
  EXPECT_EQ(CheckFolderReplaceable(dir + "/hidden", kAdapter, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  for (int i = 0; i < 8; ++i) Put(dir + "/many/f" + std::to_string(i));
  EXPECT_THAT(std::string(CheckFolderReplaceable(dir + "/many", kAdapter, "x").message()),
              HasSubstr("f0, f1, f2, f3, f4 and 3 more"));
}

TEST(CheckFolderReplaceable, AFileASymbolicLinkOrAFileOnThePathIsRefused) {
  const std::string dir = testing::FreshTempDir("replaceable_file");
  Put(dir + "/myfile.txt", "user data");
  absl::Status s = CheckFolderReplaceable(dir + "/myfile.txt", kAdapter, "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("myfile.txt is a file, not a folder"));
  s = CheckFolderReplaceable(dir + "/myfile.txt/source/a", kAdapter, "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("lies under " + dir + "/myfile.txt, which is a file, not a folder"));
  fs::create_directories(dir + "/real");
  fs::create_directory_symlink(dir + "/real", dir + "/link");
  s = CheckFolderReplaceable(dir + "/link", kAdapter, "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("is a symbolic link"));
  EXPECT_EQ(*ReadFile(dir + "/myfile.txt"), "user data");
}

TEST(CheckFolderReplaceable, TheCurrentFolderAndFoldersAboveItAreRefused) {
  const std::string dir = testing::FreshTempDir("replaceable_cwd");
  fs::create_directories(dir + "/a/b");
  const fs::path before = fs::current_path();
  fs::current_path(dir + "/a/b");
  for (const std::string& folder : {std::string("."), dir + "/a/b", dir + "/a", std::string("..")}) {
    absl::Status s = CheckFolderReplaceable(folder, kAdapter, "--out");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << folder;
    EXPECT_THAT(std::string(s.message()), HasSubstr("is or contains the current working folder"));
  }
  // An empty sibling is fine.
  fs::create_directories(dir + "/a/c");
  EXPECT_TRUE(CheckFolderReplaceable("../c", kAdapter, "--out").ok());
  fs::current_path(before);
}

TEST(ReplaceFolder, ARefusalLeavesEverythingAsItWas) {
  const std::string dir = testing::FreshTempDir("replace_refused");
  Put(dir + "/adapters/old_run/adapter_model.safetensors", "important");
  Put(dir + "/adapters/README.txt", "notes");
  const std::string before = Listing(dir);
  bool filled = false;
  absl::Status s = ReplaceFolder(
      dir + "/adapters",
      [&](const std::string&) {
        filled = true;
        return absl::OkStatus();
      },
      [&] { return CheckFolderReplaceable(dir + "/adapters", kAdapter, "--out"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(filled);
  EXPECT_EQ(Listing(dir), before);  // no temporary folder left either
}

TEST(ReplaceFolder, TheCheckRunsAgainJustBeforeTheSwap) {
  const std::string dir = testing::FreshTempDir("replace_recheck");
  const std::string folder = dir + "/out";
  absl::Status s = ReplaceFolder(
      folder,
      [&](const std::string& tmp) {
        Put(folder + "/arrived_meanwhile.txt", "keep me");  // someone else writes
        return WriteFileAtomically(tmp + "/adapter_config.json", "{}");
      },
      [&] { return CheckFolderReplaceable(folder, kAdapter, "--out"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("arrived_meanwhile.txt"));
  EXPECT_EQ(Listing(dir), "out\nout/arrived_meanwhile.txt=keep me\n");
}

TEST(ReplaceFolder, ReplacesAnEarlierAdapterWhole) {
  const std::string dir = testing::FreshTempDir("replace_adapter");
  const std::string folder = dir + "/adapter";
  Put(folder + "/adapter_config.json", "old config");
  Put(folder + "/adapter_model.safetensors", "old weights");
  absl::Status s = ReplaceFolder(
      folder,
      [&](const std::string& tmp) {
        return WriteFileAtomically(tmp + "/adapter_config.json", "new config");
      },
      [&] { return CheckFolderReplaceable(folder, kAdapter, "--out"); });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(Listing(dir), "adapter\nadapter/adapter_config.json=new config\n");
}

}  // namespace
}  // namespace mpt
