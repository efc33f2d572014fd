// Allocation counter for benchmarks, loaded into a process with LD_PRELOAD (tools/bench-saga
// builds it with `cc -O2 -shared -fPIC`). It wraps glibc's allocator entry points, counts
// each call and forwards it to glibc's own implementation (__libc_malloc & co., so no dlsym and
// no recursion).
//
// Each thread counts on a cache line of its own: with one shared counter the event loop and the
// SQLite writer, allocating on two cores, bounced its line between them, which cost the
// coordinator about a quarter more CPU per saga and lowered its peak rate (the figures it was
// meant to leave alone).
//
// The counts live in a file the benchmark names in DTM_MALLOC_COUNT_FILE: the shim maps it
// shared, so a reader sees the live values with a plain read of the file at any moment (no
// signal, no thread, no exit hook). The file is BLOCKS blocks of 64 bytes, each six
// little-endian uint64: block 0 holds the magic "dtmalloc" and the number of blocks; blocks 1...
// are the threads' (a thread takes the next free one at its first call; threads beyond the last
// block share it): 8 malloc  16 calloc  24 realloc  32 aligned (posix_memalign, aligned_alloc,
// memalign, valloc)  40 free. A reader sums the blocks.
// Calls made before the file is mapped (the dynamic loader, other constructors) are counted
// in a static block and carried over when it is mapped. Without the variable the shim counts
// into the static block only.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void __libc_free(void *pointer);

enum { MAGIC, MALLOC, CALLOC, REALLOC, ALIGNED, FREE, SLOTS };
enum { BLOCKS = 64 };

typedef struct { _Alignas(64) _Atomic uint64_t slot[SLOTS]; } counters_t;

static counters_t early;
static counters_t *_Atomic shared_blocks;     // the mapped file, once mapped
static _Atomic unsigned next_block = 1;
// initial-exec: the shim is loaded at start-up, and the general TLS model may allocate.
static __thread counters_t *mine __attribute__((tls_model("initial-exec")));

static inline void count(int slot) {
    counters_t *block = mine;
    if (block == NULL) {
        counters_t *blocks = atomic_load_explicit(&shared_blocks, memory_order_acquire);
        if (blocks == NULL) {
            atomic_fetch_add_explicit(&early.slot[slot], 1, memory_order_relaxed);
            return;
        }
        unsigned index = atomic_fetch_add_explicit(&next_block, 1, memory_order_relaxed);
        block = mine = &blocks[index < BLOCKS ? index : BLOCKS - 1];
    }
    atomic_fetch_add_explicit(&block->slot[slot], 1, memory_order_relaxed);
}

__attribute__((constructor)) static void map_counter_file(void) {
    const char *path = getenv("DTM_MALLOC_COUNT_FILE");
    if (path == NULL || *path == 0) return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    size_t size = sizeof(counters_t) * BLOCKS;
    if (ftruncate(fd, (off_t)size) != 0) { close(fd); return; }
    void *mapped = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mapped == MAP_FAILED) return;
    counters_t *blocks = mapped;
    // The calls so far go to the last block, which only threads beyond the others share.
    for (int slot = MALLOC; slot < SLOTS; slot++) {
        atomic_store_explicit(&blocks[BLOCKS - 1].slot[slot],
                              atomic_load_explicit(&early.slot[slot], memory_order_relaxed), memory_order_relaxed);
    }
    uint64_t magic;
    memcpy(&magic, "dtmalloc", 8);
    atomic_store_explicit(&blocks[0].slot[MAGIC], magic, memory_order_relaxed);
    atomic_store_explicit(&blocks[0].slot[MALLOC], BLOCKS, memory_order_relaxed);
    // Calls between the copy and this store are counted in `early` and lost: a handful at
    // start-up, before the benchmark's first reading.
    atomic_store_explicit(&shared_blocks, blocks, memory_order_release);
}

void *malloc(size_t size) {
    count(MALLOC);
    return __libc_malloc(size);
}

void *calloc(size_t count_, size_t size) {
    count(CALLOC);
    return __libc_calloc(count_, size);
}

void *realloc(void *pointer, size_t size) {
    count(REALLOC);
    return __libc_realloc(pointer, size);
}

void free(void *pointer) {
    if (pointer != NULL) count(FREE);
    __libc_free(pointer);
}

static int valid_alignment(size_t alignment) {
    return alignment != 0 && (alignment & (alignment - 1)) == 0;
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    count(ALIGNED);
    if (!valid_alignment(alignment) || alignment % sizeof(void *) != 0) return EINVAL;
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *result = pointer;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
    count(ALIGNED);
    if (!valid_alignment(alignment)) { errno = EINVAL; return NULL; }
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
    count(ALIGNED);
    return __libc_memalign(alignment, size);
}

void *valloc(size_t size) {
    count(ALIGNED);
    return __libc_valloc(size);
}
