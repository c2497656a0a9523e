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

TEST(HeapMemoryTest, RunsOnTheAllocatorTheBuildLinks) {
  EXPECT_EQ(HeapAllocatorName(), MPT_TEST_ALLOCATOR);
}

TEST(HeapMemoryTest, ReleaseHandsFreedPagesBack) {
  if (HeapBytesInUse() < 0) GTEST_SKIP() << "the allocator does not report heap use";
  // glibc: many small blocks (below the mmap threshold) come from the heap
  // proper, and freeing all but a few at the top keeps the heap from
  // shrinking by itself. tcmalloc keeps freed small objects in its caches
  // for reuse and returns whole free spans of its page heap: large blocks.
  const bool tcmalloc = HeapAllocatorName() == "tcmalloc";
  const int count = tcmalloc ? 40 : 40000;
  const size_t size = tcmalloc ? 1 << 20 : 1000;
  std::vector<char*> blocks;
  for (int i = 0; i < count; ++i) {
    char* p = static_cast<char*>(std::malloc(size));
    for (size_t j = 0; j < size; j += 64) p[j] = 1;  // touch every page
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
  if (HeapAllocatorName() == "tcmalloc") {
    EXPECT_EQ(LimitHeapArenas(2), 0);  // no arenas to bound
    return;
  }
  ASSERT_EQ(setenv("MALLOC_ARENA_MAX", "3", 1), 0);
  EXPECT_EQ(LimitHeapArenas(1), 3);
  ASSERT_EQ(unsetenv("MALLOC_ARENA_MAX"), 0);
  if (HeapBytesInUse() >= 0) {
    EXPECT_EQ(LimitHeapArenas(2), 2);
  }
}

}  // namespace
}  // namespace mpt
