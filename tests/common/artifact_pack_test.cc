#include "common/artifact_pack.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <filesystem>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& path, const std::string& contents) {
  fs::create_directories(path.parent_path());
  ASSERT_TRUE(WriteFileAtomically(path.string(), contents).ok());
}

TEST(ArtifactPackTest, RoundTripKeepsFilesAndFolders) {
  const fs::path src = testing::FreshTempDir("pack_src");
  Write(src / "adapter_config.json", "{\"peft_type\": \"PROMPT_TUNING\"}");
  Write(src / "adapter_model.safetensors", std::string(1000, '\x01') + std::string(3, '\0'));
  Write(src / "sub/deeper/empty.bin", "");
  fs::create_directories(src / "empty_folder");
  auto blob = PackFolder(src.string());
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(blob->size() % 512, 0u);

  const fs::path dst = testing::FreshTempDir("pack_dst") + "/out";
  ASSERT_TRUE(UnpackFolder(*blob, dst.string()).ok());
  EXPECT_EQ(*ReadFile((dst / "adapter_config.json").string()),
            "{\"peft_type\": \"PROMPT_TUNING\"}");
  EXPECT_EQ(*ReadFile((dst / "adapter_model.safetensors").string()),
            std::string(1000, '\x01') + std::string(3, '\0'));
  EXPECT_EQ(*ReadFile((dst / "sub/deeper/empty.bin").string()), "");
  EXPECT_TRUE(fs::is_directory(dst / "empty_folder"));
}

TEST(ArtifactPackTest, SameContentsGiveSameBytes) {
  const fs::path a = testing::FreshTempDir("pack_a");
  const fs::path b = testing::FreshTempDir("pack_b");
  // Created in different orders.
  Write(a / "x", "1");
  Write(a / "y/z", "2");
  Write(b / "y/z", "2");
  Write(b / "x", "1");
  EXPECT_EQ(*PackFolder(a.string()), *PackFolder(b.string()));
}

TEST(ArtifactPackTest, SystemTarReadsOurArchiveAndWeReadItsArchive) {
  if (std::system("tar --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no tar";
  const fs::path src = testing::FreshTempDir("tar_src");
  const std::string long_name = std::string(120, 'n') + "/" + std::string(90, 'f') + ".txt";
  Write(src / "a.txt", "hello");
  Write(src / long_name, "long");
  auto blob = PackFolder(src.string());
  ASSERT_TRUE(blob.ok()) << blob.status();
  const fs::path tmp = testing::FreshTempDir("tar_io");
  ASSERT_TRUE(WriteFileAtomically((tmp / "ours.tar").string(), *blob).ok());
  const fs::path x = tmp / "x";
  fs::create_directories(x);
  ASSERT_EQ(std::system(("tar -xf " + (tmp / "ours.tar").string() + " -C " + x.string()).c_str()),
            0);
  EXPECT_EQ(*ReadFile((x / "a.txt").string()), "hello");
  EXPECT_EQ(*ReadFile((x / long_name).string()), "long");

  // GNU tar's own format, with a name longer than 255 characters.
  const std::string very_long = std::string(200, 'd') + "/" + std::string(150, 'e');
  Write(src / very_long, "gnu");
  for (const char* format : {"gnu", "pax"}) {
    const std::string tar_path = (tmp / (std::string(format) + ".tar")).string();
    ASSERT_EQ(std::system(("tar --format=" + std::string(format) + " -cf " + tar_path + " -C " +
                           src.string() + " .")
                              .c_str()),
              0);
    auto entries = ReadPackedEntries(*ReadFile(tar_path));
    ASSERT_TRUE(entries.ok()) << format << ": " << entries.status();
    bool found = false;
    for (const auto& e : *entries) found |= e.path == very_long && e.contents == "gnu";
    EXPECT_TRUE(found) << format;
  }
}

TEST(ArtifactPackTest, RejectsCorruptAndHostileArchives) {
  const fs::path src = testing::FreshTempDir("bad_src");
  Write(src / "f", "data");
  std::string blob = *PackFolder(src.string());

  std::string flipped = blob;
  flipped[10] ^= 1;
  EXPECT_EQ(ReadPackedEntries(flipped).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPackedEntries(blob.substr(0, 600)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPackedEntries("").status().code(), absl::StatusCode::kInvalidArgument);

  // A name that climbs out of the folder.
  const fs::path evil = testing::FreshTempDir("evil");
  if (std::system("tar --version > /dev/null 2>&1") == 0) {
    Write(evil / "inner/x", "x");
    const std::string tar_path = (evil / "evil.tar").string();
    ASSERT_EQ(std::system(("cd " + (evil / "inner").string() + " && tar -cf " + tar_path +
                           " --absolute-names ../inner/x")
                              .c_str()),
              0);
    auto entries = ReadPackedEntries(*ReadFile(tar_path));
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(entries.status().message().find(".."), std::string::npos);
  }

  PackLimits small;
  small.max_total_bytes = 3;
  EXPECT_EQ(ReadPackedEntries(blob, small).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(PackFolder(src.string(), small).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// One ustar entry (header and padded data) of type `type` ('0' a file, '5'
// a folder, 'x' a pax extended header).
std::string TarEntry(const std::string& name, char type, const std::string& data) {
  std::string header(512, '\0');
  header.replace(0, std::min<size_t>(name.size(), 100), name.substr(0, 100));
  std::snprintf(&header[100], 8, "%07o", 0644);
  std::snprintf(&header[124], 12, "%011o", static_cast<unsigned>(data.size()));
  std::snprintf(&header[136], 12, "%011o", 0u);
  header[156] = type;
  header.replace(257, 6, std::string("ustar\0", 6));
  header.replace(263, 2, "00");
  header.replace(148, 8, std::string(8, ' '));
  unsigned sum = 0;
  for (char c : header) sum += static_cast<unsigned char>(c);
  std::snprintf(&header[148], 8, "%06o", sum);
  std::string padded = data;
  padded.resize((data.size() + 511) / 512 * 512, '\0');
  return header + padded;
}

std::string PaxPath(const std::string& path) {
  std::string record = " path=" + path + "\n";
  std::string len = std::to_string(record.size());
  len = std::to_string(record.size() + len.size());  // the length counts its own digits
  return TarEntry("PaxHeader", 'x', len + record);
}

const std::string kEnd(1024, '\0');

TEST(ArtifactPackTest, RejectsNamesThatCannotBeWritten) {
  // Our own writer of raw headers is read back as it was meant.
  auto plain = ReadPackedEntries(TarEntry("a/b.txt", '0', "hi") + kEnd);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->size(), 1u);
  EXPECT_EQ((*plain)[0].path, "a/b.txt");
  EXPECT_EQ((*plain)[0].contents, "hi");

  struct Case {
    std::string archive, in_message;
  };
  const std::vector<Case> cases = {
      {PaxPath(std::string("x\0y", 3)) + TarEntry("x", '0', "1") + kEnd, "NUL byte"},
      {TarEntry("f", '0', "1") + TarEntry("f/g", '0', "2") + kEnd, "holds as a file"},
      {TarEntry("f/g/h", '0', "2") + TarEntry("f", '0', "1") + kEnd, "holds as a file"},
      {TarEntry("d", '5', "") + TarEntry("d", '0', "1") + kEnd, "both a folder and a file"},
      {TarEntry("d/", '5', "") + TarEntry("./d", '0', "1") + kEnd, "both a folder and a file"},
      {PaxPath("../" + std::string(5000, 'z')) + TarEntry("x", '0', "1") + kEnd, "climbs out"},
      {PaxPath("/etc/\npasswd") + TarEntry("x", '0', "1") + kEnd, "absolute path"},
      {TarEntry("l", '2', "") + kEnd, "not a regular file or folder"},
  };
  for (const Case& c : cases) {
    auto entries = ReadPackedEntries(c.archive);
    ASSERT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument) << c.in_message;
    const std::string message(entries.status().message());
    EXPECT_NE(message.find(c.in_message), std::string::npos) << message;
    // Names from the archive come quoted and cut short: no newline, no NUL,
    // no 5,000-byte message.
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_EQ(message.find('\0'), std::string::npos);
    EXPECT_LT(message.size(), 300u) << message;
  }
  // A file written twice is kept as the last copy, as tar does.
  auto twice = ReadPackedEntries(TarEntry("f", '0', "1") + TarEntry("f", '0', "2") + kEnd);
  ASSERT_TRUE(twice.ok()) << twice.status();
  const fs::path dst = testing::FreshTempDir("twice") + "/out";
  ASSERT_TRUE(UnpackFolder(TarEntry("f", '0', "1") + TarEntry("f", '0', "2") + kEnd,
                           dst.string())
                  .ok());
  EXPECT_EQ(*ReadFile((dst / "f").string()), "2");
}

TEST(ArtifactPackTest, FailedUnpackKeepsTheOldFolder) {
  const fs::path dst = testing::FreshTempDir("keep") + "/out";
  Write(dst / "old", "old");
  EXPECT_FALSE(UnpackFolder("garbage", dst.string()).ok());
  EXPECT_EQ(*ReadFile((dst / "old").string()), "old");
  EXPECT_EQ(PackFolder((dst / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST(ArtifactPackTest, SymlinksAreRefused) {
  const fs::path src = testing::FreshTempDir("links");
  Write(src / "f", "x");
  fs::create_symlink("f", src / "link");
  EXPECT_EQ(PackFolder(src.string()).status().code(), absl::StatusCode::kFailedPrecondition);
}

// A download never deletes what the user did not ask to replace: a folder
// with other files or a file is refused and left as it was; an earlier
// download of an adapter is replaced whole.
TEST(ArtifactPackTest, UnpackDownloadReplacesOnlyAnEarlierAdapter) {
  const fs::path src = testing::FreshTempDir("download_src");
  Write(src / "adapter_config.json", "new config");
  Write(src / "adapter_model.safetensors", "new weights");
  const std::string blob = *PackFolder(src.string());
  const fs::path dir = testing::FreshTempDir("download_dst");

  Write(dir / "adapters/old_run/adapter_model.safetensors", "important");
  Write(dir / "adapters/README.txt", "notes");
  absl::Status s = UnpackDownload(blob, (dir / "adapters").string(), "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("is not an adapter folder (it holds README.txt, old_run/)"),
            std::string::npos)
      << s;
  EXPECT_EQ(*ReadFile((dir / "adapters/old_run/adapter_model.safetensors").string()), "important");
  EXPECT_EQ(*ReadFile((dir / "adapters/README.txt").string()), "notes");
  EXPECT_FALSE(fs::exists(dir / "adapters/adapter_config.json"));

  Write(dir / "myfile.txt", "user data");
  s = UnpackDownload(blob, (dir / "myfile.txt").string(), "--out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*ReadFile((dir / "myfile.txt").string()), "user data");

  // New, then again over the first download: replaced.
  ASSERT_TRUE(UnpackDownload(blob, (dir / "one").string(), "--out").ok());
  Write(dir / "one/adapter_config.json", "edited");
  ASSERT_TRUE(UnpackDownload(blob, (dir / "one").string(), "--out").ok());
  EXPECT_EQ(*ReadFile((dir / "one/adapter_config.json").string()), "new config");
  EXPECT_EQ(*ReadFile((dir / "one/adapter_model.safetensors").string()), "new weights");
  // Nothing left beside it (no temporary or moved-aside folders).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()),
            3);  // adapters, myfile.txt, one
}

}  // namespace
}  // namespace mpt
