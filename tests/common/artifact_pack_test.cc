#include "common/artifact_pack.h"

#include <cstdlib>
#include <iterator>
#include <filesystem>
#include <string>

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
