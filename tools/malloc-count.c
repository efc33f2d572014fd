// Allocation counter for benchmarks, loaded into a process with LD_PRELOAD (tools/bench-saga
// builds it with `cc -O2 -shared -fPIC`). It wraps glibc's allocator entry points, counts
// each call with a relaxed atomic add and forwards it to glibc's own implementation
// (__libc_malloc & co., so no dlsym and no recursion).
//
// The counts live in a file the benchmark names in DTM_MALLOC_COUNT_FILE: the shim maps it
// shared, so a reader sees the live values with a plain read of the file at any moment (no
// signal, no thread, no exit hook). Layout: little-endian uint64 at offsets
//   0 magic "dtmalloc"   8 malloc   16 calloc   24 realloc   32 aligned (posix_memalign,
//   aligned_alloc, memalign, valloc)   40 free
// Calls made before the file is mapped (the dynamic loader, other constructors) are counted
// in a static block and carried over when it is mapped. Without the variable the shim counts
// into the static block only and costs one atomic add per call.
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

typedef struct { _Atomic uint64_t slot[SLOTS]; } counters_t;

static counters_t early;
static counters_t *_Atomic live = &early;

static inline void count(int slot) {
    atomic_fetch_add_explicit(&atomic_load_explicit(&live, memory_order_relaxed)->slot[slot], 1,
                              memory_order_relaxed);
}

__attribute__((constructor)) static void map_counter_file(void) {
    const char *path = getenv("DTM_MALLOC_COUNT_FILE");
    if (path == NULL || *path == 0) return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (ftruncate(fd, 4096) != 0) { close(fd); return; }
    void *mapped = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mapped == MAP_FAILED) return;
    counters_t *shared = mapped;
    for (int slot = MALLOC; slot < SLOTS; slot++) {
        atomic_store_explicit(&shared->slot[slot], atomic_load_explicit(&early.slot[slot], memory_order_relaxed),
                              memory_order_relaxed);
    }
    uint64_t magic;
    memcpy(&magic, "dtmalloc", 8);
    atomic_store_explicit(&shared->slot[MAGIC], magic, memory_order_relaxed);
    // Calls between the copy and this store are counted in `early` and lost: a handful at
    // start-up, before the benchmark's first reading.
    atomic_store_explicit(&live, shared, memory_order_release);
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
