#include "common/file_digest.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mpt {
namespace {

namespace fs = std::filesystem;

class FileDigestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(std::getenv("TEST_TMPDIR")) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string Digest(const std::string& path) {
    absl::StatusOr<std::string> d = FileDigest(path);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : "";
  }
  fs::path dir_;
};

std::string RandomFloats(size_t count, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::string bytes(count * sizeof(float), '\0');
  for (size_t i = 0; i < count; ++i) {
    const float v = normal(rng) * scale;
    std::memcpy(&bytes[i * sizeof(float)], &v, sizeof(float));
  }
  return bytes;
}

TEST_F(FileDigestTest, SmallFilesAreHashedWhole) {
  const std::string a = Write("a.jsonl", "{\"input\": \"x\", \"target\": \"y\"}\n");
  const std::string b = Write("b.jsonl", "{\"input\": \"x\", \"target\": \"y\"}\n");
  const std::string c = Write("c.jsonl", "{\"input\": \"x\", \"target\": \"z\"}\n");
  EXPECT_EQ(Digest(a), Digest(b));
  EXPECT_NE(Digest(a), Digest(c));
  EXPECT_EQ(Digest(a).size(), 64u);
}

TEST_F(FileDigestTest, LargeFilesSeeScaledValuesAndAnotherHeader) {
  const size_t floats = 6u << 20;  // 24 MiB: sampled, not hashed whole
  const std::string weights = RandomFloats(floats, 1);
  const std::string a = Write("a.safetensors", weights);
  const std::string same = Write("same.safetensors", weights);
  const std::string scaled = Write("scaled.safetensors", RandomFloats(floats, 1, 0.5f));
  std::string header = weights;
  header[100] ^= 1;
  const std::string other_header = Write("header.safetensors", header);
  std::string tail = weights;
  tail[tail.size() - 10] ^= 1;
  const std::string other_tail = Write("tail.safetensors", tail);
  EXPECT_EQ(Digest(a), Digest(same));
  EXPECT_NE(Digest(a), Digest(scaled));
  EXPECT_NE(Digest(a), Digest(other_header));
  EXPECT_NE(Digest(a), Digest(other_tail));
  EXPECT_NE(Digest(a), Digest(Write("longer.safetensors", weights + "x")));
}

TEST_F(FileDigestTest, MissingFilesAndFoldersAreNamed) {
  absl::StatusOr<std::string> d = FileDigest((dir_ / "absent.jsonl").string());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("absent.jsonl"), std::string::npos) << d.status();
  EXPECT_FALSE(FileDigest(dir_.string()).ok());
  EXPECT_FALSE(ModelFolderDigest((dir_ / "no_model").string()).ok());
}

TEST_F(FileDigestTest, ModelFolderCountsWhatDefinesTheModelOnly) {
  Write("config.json", "{\"d_model\": 8}");
  Write("model.safetensors", RandomFloats(1000, 2));
  Write("spiece.model", "pieces");
  const std::string before = *ModelFolderDigest(dir_.string());
  Write("README.md", "notes");
  fs::create_directories(dir_ / "outputs");
  Write("outputs/adapter_model.safetensors", "x");
  EXPECT_EQ(*ModelFolderDigest(dir_.string()), before);
  Write("model.safetensors", RandomFloats(1000, 3));
  const std::string other_weights = *ModelFolderDigest(dir_.string());
  EXPECT_NE(other_weights, before);
  Write("config.json", "{\"d_model\": 16}");
  EXPECT_NE(*ModelFolderDigest(dir_.string()), other_weights);
  Write("model-00002-of-00002.safetensors", RandomFloats(10, 4));
  EXPECT_NE(*ModelFolderDigest(dir_.string()), other_weights);
}

}  // namespace
}  // namespace mpt
