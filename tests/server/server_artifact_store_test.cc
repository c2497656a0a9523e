// ArtifactStore: content addressing, checksum checks on write and read.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "server/artifact_store.h"
#include "tests/test_util.h"

namespace mpt {
namespace {

TEST(ArtifactStoreTest, StoresBytesUnderTheirHash) {
  const std::string dir = testing::FreshTempDir("blobs_put");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string data = "adapter_model.safetensors bytes";
  const std::string sha = Sha256Hex(data);
  auto put = (*store)->Put(data, absl::AsciiStrToUpper(sha));  // either case accepted
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(*put, sha);
  EXPECT_EQ((*store)->PathFor(sha), dir + "/sha256/" + sha.substr(0, 2) + "/" + sha.substr(2));
  EXPECT_TRUE(std::filesystem::is_regular_file((*store)->PathFor(sha)));
  EXPECT_TRUE((*store)->Contains(sha));
  auto got = (*store)->Get(sha);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, data);
  EXPECT_TRUE((*store)->Put(data, sha).ok());  // again: a no-op
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
  ASSERT_TRUE((*store)->Remove(sha).ok());
  EXPECT_FALSE((*store)->Contains(sha));
  EXPECT_EQ((*store)->Get(sha).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*store)->Remove(sha).ok());
}

TEST(ArtifactStoreTest, ChecksumMismatchStoresNothing) {
  const std::string dir = testing::FreshTempDir("blobs_mismatch");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string data = "what arrived";
  auto put = (*store)->Put(data, Sha256Hex("what was sent"));
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE((*store)->Contains(Sha256Hex(data)));
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/sha256"));
  EXPECT_EQ((*store)->Put(data, "1234").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->Get("../../etc/passwd").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ArtifactStoreTest, CorruptionIsDetectedOnRead) {
  const std::string dir = testing::FreshTempDir("blobs_corrupt");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string data(100000, 'x');
  auto sha = (*store)->Put(data, Sha256Hex(data));
  ASSERT_TRUE(sha.ok());
  {
    std::fstream f((*store)->PathFor(*sha), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('y');
  }
  auto got = (*store)->Get(*sha);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
}

TEST(ArtifactStoreTest, OpenClearsTemporaryFilesOfACrash) {
  const std::string dir = testing::FreshTempDir("blobs_crash");
  { ASSERT_TRUE(ArtifactStore::Open(dir).ok()); }
  std::ofstream(dir + "/tmp/half-written") << "partial";
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
}

}  // namespace
}  // namespace mpt
