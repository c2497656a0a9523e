// Keeps a long-running server's resident memory close to what it really
// uses. glibc's allocator gives each thread that allocates under contention
// an arena of its own (up to 8 per core) and keeps freed pages in them; a
// server with one thread per RPC stream ends up holding several times its
// live heap. These two calls bound the number of arenas and hand free pages
// back to the kernel. Both do nothing where the C library is not glibc.
//
// Thread-safety: both may be called from any thread.
#ifndef MPT_COMMON_HEAP_MEMORY_H_
#define MPT_COMMON_HEAP_MEMORY_H_

#include <cstdint>

namespace mpt {

// Caps the allocator's arenas at `max_arenas` unless the MALLOC_ARENA_MAX
// environment variable already sets the cap (the operator's choice wins).
// Call before starting threads. Returns the cap in force, 0 when unknown.
int LimitHeapArenas(int max_arenas);

// Returns free heap pages to the kernel (all arenas). Cheap enough to call
// every few seconds; the process keeps working while it runs.
void ReleaseFreeHeapMemory();

// Bytes allocated and not yet freed, as the allocator counts them; -1 where
// that is unknown.
int64_t HeapBytesInUse();

}  // namespace mpt

#endif  // MPT_COMMON_HEAP_MEMORY_H_
