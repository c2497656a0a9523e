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

// Reads `reader` in order in pieces of `piece` bytes; the first error ends it.
absl::StatusOr<std::string> ReadAll(ArtifactStore::BlobReader& reader, size_t piece) {
  std::string all, part;
  do {
    absl::Status s = reader.Read(static_cast<int64_t>(all.size()), piece, &part);
    if (!s.ok()) return s;
    if (part.empty()) break;
    all += part;
  } while (static_cast<int64_t>(all.size()) < reader.size());
  return all;
}

TEST(ArtifactStoreTest, BlobsReadPieceByPiece) {
  const std::string dir = testing::FreshTempDir("blobs_reader");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  std::string data;
  for (int i = 0; i < 10000; ++i) data += static_cast<char>('a' + i % 26);
  auto sha = (*store)->Put(data, Sha256Hex(data));
  ASSERT_TRUE(sha.ok());
  auto reader = (*store)->OpenBlob(*sha);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->size(), 10000);
  auto all = ReadAll(**reader, 333);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, data);
  // Out of order (a Range request): any piece, not checked.
  std::string part;
  ASSERT_TRUE((*reader)->Read(9990, 100, &part).ok());
  EXPECT_EQ(part, data.substr(9990));
  ASSERT_TRUE((*reader)->Read(10000, 100, &part).ok());
  EXPECT_EQ(part, "");
  EXPECT_EQ((*reader)->Read(10001, 1, &part).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*reader)->Read(-1, 1, &part).code(), absl::StatusCode::kInvalidArgument);

  // A blob removed while open still reads to its end.
  auto open = (*store)->OpenBlob(*sha);
  ASSERT_TRUE(open.ok());
  ASSERT_TRUE((*store)->Remove(*sha).ok());
  EXPECT_EQ((*store)->OpenBlob(*sha).status().code(), absl::StatusCode::kNotFound);
  all = ReadAll(**open, 4096);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, data);

  // The empty blob.
  auto empty = (*store)->Put("", Sha256Hex(""));
  ASSERT_TRUE(empty.ok());
  auto none = (*store)->OpenBlob(*empty);
  ASSERT_TRUE(none.ok());
  all = ReadAll(**none, 10);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, "");
  EXPECT_EQ((*store)->OpenBlob(std::string(64, '0')).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->OpenBlob("xyz").status().code(), absl::StatusCode::kInvalidArgument);
}

// A damaged blob read in order: every piece before the last is served, the
// last is DATA_LOSS, so a stream built on it never carries a checksum that
// its bytes do not have. A blob cut short is DATA_LOSS where it ends.
TEST(ArtifactStoreTest, DamageShowsOnTheLastPieceOfAnInOrderRead) {
  const std::string dir = testing::FreshTempDir("blobs_reader_damage");
  auto store = ArtifactStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const std::string data(10000, 'x');
  auto sha = (*store)->Put(data, Sha256Hex(data));
  ASSERT_TRUE(sha.ok());
  {
    std::fstream f((*store)->PathFor(*sha), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('y');
  }
  auto reader = (*store)->OpenBlob(*sha);
  ASSERT_TRUE(reader.ok());
  std::string part;
  for (int64_t offset = 0; offset < 9000; offset += 1000) {
    ASSERT_TRUE((*reader)->Read(offset, 1000, &part).ok()) << offset;
  }
  absl::Status last = (*reader)->Read(9000, 1000, &part);
  EXPECT_EQ(last.code(), absl::StatusCode::kDataLoss) << last;
  EXPECT_NE(last.message().find((*store)->PathFor(*sha)), std::string::npos) << last;
  EXPECT_EQ(part, "");

  auto cut = (*store)->OpenBlob(*sha);
  ASSERT_TRUE(cut.ok());
  std::filesystem::resize_file((*store)->PathFor(*sha), 5000);
  absl::StatusOr<std::string> all = ReadAll(**cut, 4096);
  EXPECT_EQ(all.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(all.status().message().find("ends at 5000 of its 10000 bytes"), std::string::npos)
      << all.status();
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
