#include "common/heap_memory.h"

#include <dlfcn.h>

#include <cstddef>
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mpt {
namespace {

// tcmalloc's C interface (gperftools' malloc_extension_c.h), looked up at
// run time: present only where the program links tcmalloc.
struct Tcmalloc {
  void (*release_free_memory)() = nullptr;
  int (*get_numeric_property)(const char* property, size_t* value) = nullptr;
  bool linked() const { return release_free_memory != nullptr && get_numeric_property != nullptr; }
};

const Tcmalloc& TcmallocApi() {
  static const Tcmalloc api = [] {
    Tcmalloc t;
    t.release_free_memory =
        reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
    t.get_numeric_property = reinterpret_cast<int (*)(const char*, size_t*)>(
        dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty"));
    return t;
  }();
  return api;
}

}  // namespace

std::string HeapAllocatorName() {
  if (TcmallocApi().linked()) return "tcmalloc";
#if defined(__GLIBC__)
  return "glibc";
#else
  return "unknown";
#endif
}

int LimitHeapArenas(int max_arenas) {
  if (TcmallocApi().linked()) return 0;
#if defined(__GLIBC__)
  if (const char* env = std::getenv("MALLOC_ARENA_MAX"); env != nullptr && *env != '\0') {
    return std::atoi(env);
  }
  if (max_arenas > 0 && mallopt(M_ARENA_MAX, max_arenas) == 1) return max_arenas;
#else
  (void)max_arenas;
#endif
  return 0;
}

void ReleaseFreeHeapMemory() {
  if (const Tcmalloc& tc = TcmallocApi(); tc.linked()) {
    tc.release_free_memory();
    return;
  }
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

int64_t HeapBytesInUse() {
  if (const Tcmalloc& tc = TcmallocApi(); tc.linked()) {
    size_t bytes = 0;
    if (tc.get_numeric_property("generic.current_allocated_bytes", &bytes) == 0) return -1;
    return static_cast<int64_t>(bytes);
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
#else
  return -1;
#endif
}

}  // namespace mpt
