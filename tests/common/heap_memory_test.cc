#include "common/heap_memory.h"

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mpt {
namespace {

// Resident set size of this process in KiB, from /proc.
long ResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      long kib = 0;
      status >> kib;
      return kib;
    }
    std::getline(status, key);
  }
  return -1;
}

TEST(HeapMemoryTest, CountsLiveBytes) {
  const int64_t before = HeapBytesInUse();
  if (before < 0) GTEST_SKIP() << "the C library does not report heap use";
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int i = 0; i < 64; ++i) blocks.emplace_back(new char[64 * 1024]);
  EXPECT_GE(HeapBytesInUse() - before, 64 * 64 * 1024);
  blocks.clear();
  EXPECT_LT(HeapBytesInUse() - before, 64 * 1024);
}

TEST(HeapMemoryTest, ReleaseHandsFreedPagesBack) {
  if (HeapBytesInUse() < 0) GTEST_SKIP() << "not glibc";
  // Many small blocks (below the mmap threshold) come from the heap proper;
  // freeing all but a few at the top keeps the heap from shrinking by itself.
  std::vector<char*> blocks;
  for (int i = 0; i < 40000; ++i) {
    char* p = static_cast<char*>(std::malloc(1000));
    for (int j = 0; j < 1000; j += 64) p[j] = 1;  // touch every page
    blocks.push_back(p);
  }
  for (size_t i = 0; i + 10 < blocks.size(); ++i) std::free(blocks[i]);
  const long held = ResidentKiB();
  ReleaseFreeHeapMemory();
  const long after = ResidentKiB();
  EXPECT_LT(after, held - 20 * 1024) << "about 40 MB were free; RSS " << held << " -> " << after
                                     << " KiB";
  for (size_t i = blocks.size() - 10; i < blocks.size(); ++i) std::free(blocks[i]);
}

TEST(HeapMemoryTest, EnvironmentWinsOverTheArgument) {
  ASSERT_EQ(setenv("MALLOC_ARENA_MAX", "3", 1), 0);
  EXPECT_EQ(LimitHeapArenas(1), 3);
  ASSERT_EQ(unsetenv("MALLOC_ARENA_MAX"), 0);
  if (HeapBytesInUse() >= 0) EXPECT_EQ(LimitHeapArenas(2), 2);
}

}  // namespace
}  // namespace mpt
