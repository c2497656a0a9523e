// Keeps a long-running server's resident memory close to what it really
// uses, whichever allocator the process runs on.
//
// The programs link tcmalloc (Debian's libtcmalloc-minimal4, `@system_libs//
// :tcmalloc`): its per-thread caches make the many small allocations of RPC
// handling and the large ones of tensors cheaper than glibc's malloc, and
// freed memory is reused instead of handed back and faulted in again
// (docs/MEASUREMENTS.md, "The heap allocator"). Where tcmalloc is not linked,
// glibc's allocator runs: it gives each thread that allocates under
// contention an arena of its own (up to 8 per core) and keeps freed pages in
// them, so a server with one thread per RPC stream ends up holding several
// times its live heap; LimitHeapArenas bounds the arenas there.
// ReleaseFreeHeapMemory hands free pages back to the kernel under either.
//
// Thread-safety: all may be called from any thread.
#ifndef MPT_COMMON_HEAP_MEMORY_H_
#define MPT_COMMON_HEAP_MEMORY_H_

#include <cstdint>
#include <string>

namespace mpt {

// "tcmalloc", "glibc" or "unknown": the allocator this process runs on.
std::string HeapAllocatorName();

// Caps glibc's arenas at `max_arenas` unless the MALLOC_ARENA_MAX
// environment variable already sets the cap (the operator's choice wins).
// Call before starting threads. Returns the cap in force, 0 when unknown or
// when the allocator is not glibc's (tcmalloc has no arenas).
int LimitHeapArenas(int max_arenas);

// Returns free heap pages to the kernel (glibc: all arenas; tcmalloc: its
// page heap). Cheap enough to call every few seconds; the process keeps
// working while it runs.
void ReleaseFreeHeapMemory();

// Bytes allocated and not yet freed, as the allocator counts them; -1 where
// that is unknown.
int64_t HeapBytesInUse();

}  // namespace mpt

#endif  // MPT_COMMON_HEAP_MEMORY_H_
