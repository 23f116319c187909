// Large aligned blocks from mapped ranges that stay mapped: preloaded (LD_PRELOAD) by
// agg_jax/large_blocks.py, which says why.
//
// posix_memalign, aligned_alloc and memalign of at least the threshold (64 MiB unless
// AGG_JAX_LARGE_BLOCK_BYTES says otherwise) come from anonymous mappings, whose free parts are
// reused by best fit and merged with free neighbours; a request no free part holds first hands
// the free parts back to the system (munmap), then maps a new range. free, realloc and
// malloc_usable_size recognise these blocks (page-aligned, in the sorted segment table) and hand
// everything else to glibc's own functions, as every other allocation function is left to glibc.
// Where the table of segments is full or a mapping fails, glibc serves the block.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_malloc(size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void __libc_free(void *pointer);

enum { PAGE = 4096, MAX_SEGMENTS = 1024 };

typedef struct {
  uintptr_t start;
  size_t size;
  int used;
} Segment;

static Segment segments[MAX_SEGMENTS];  // sorted by start; neighbours may touch
static int count;                       // written under the lock
static size_t threshold = (size_t)64 << 20;
static size_t mapped;                   // bytes mapped now
static size_t mappings;                 // mappings made so far
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t (*libc_usable_size)(void *);

static void lock_for_fork(void) { pthread_mutex_lock(&lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void start(void) {
  const char *bytes = getenv("AGG_JAX_LARGE_BLOCK_BYTES");
  if (bytes != NULL && strtoull(bytes, NULL, 10) > 0) threshold = strtoull(bytes, NULL, 10);
  libc_usable_size = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
  pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}

static void remove_at(int i) {
  memmove(&segments[i], &segments[i + 1], (size_t)(count - i - 1) * sizeof(Segment));
  count--;
}

static int insert_at(int i, Segment segment) {
  if (count == MAX_SEGMENTS) return 0;
  memmove(&segments[i + 1], &segments[i], (size_t)(count - i) * sizeof(Segment));
  segments[i] = segment;
  count++;
  return 1;
}

// The index of the segment starting at `start`, or -1. Under the lock.
static int find(uintptr_t start) {
  int low = 0, high = count - 1;
  while (low <= high) {
    int middle = (low + high) / 2;
    if (segments[middle].start == start) return middle;
    if (segments[middle].start < start) low = middle + 1; else high = middle - 1;
  }
  return -1;
}

// Hands every free segment back to the system. Under the lock.
static void unmap_free(void) {
  for (int i = count - 1; i >= 0; i--) {
    if (!segments[i].used) {
      munmap((void *)segments[i].start, segments[i].size);
      mapped -= segments[i].size;
      remove_at(i);
    }
  }
}

// A block of `size` bytes (a multiple of PAGE): the best-fitting free segment, split, or a new
// mapping. Under the lock.
static void *take(size_t size) {
  int best = -1;
  for (int i = 0; i < count; i++) {
    if (!segments[i].used && segments[i].size >= size &&
        (best < 0 || segments[i].size < segments[best].size)) best = i;
  }
  if (best >= 0) {
    Segment *segment = &segments[best];
    if (segment->size > size) {
      Segment rest = {segment->start + size, segment->size - size, 0};
      if (!insert_at(best + 1, rest)) return NULL;
      segments[best].size = size;
    }
    segments[best].used = 1;
    return (void *)segments[best].start;
  }
  unmap_free();
  if (count == MAX_SEGMENTS) return NULL;
  void *block = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED) return NULL;
  int i = 0;
  while (i < count && segments[i].start < (uintptr_t)block) i++;
  insert_at(i, (Segment){(uintptr_t)block, size, 1});
  mapped += size;
  mappings++;
  return block;
}

// Frees segment i, merged with free neighbours that touch it. Under the lock.
static void give_back(int i) {
  segments[i].used = 0;
  if (i + 1 < count && !segments[i + 1].used &&
      segments[i].start + segments[i].size == segments[i + 1].start) {
    segments[i].size += segments[i + 1].size;
    remove_at(i + 1);
  }
  if (i > 0 && !segments[i - 1].used &&
      segments[i - 1].start + segments[i - 1].size == segments[i].start) {
    segments[i - 1].size += segments[i].size;
    remove_at(i);
  }
}

// Whether `size` bytes at `alignment` are ours to serve.
static int large(size_t alignment, size_t size) {
  return size >= threshold && alignment <= PAGE && size <= SIZE_MAX - PAGE;
}

static void *aligned(size_t alignment, size_t size) {
  if (!large(alignment, size)) return __libc_memalign(alignment, size);
  pthread_mutex_lock(&lock);
  void *block = take((size + PAGE - 1) / PAGE * PAGE);
  pthread_mutex_unlock(&lock);
  // A full segment table or a failed mapping: glibc's block, which free() hands back to glibc.
  return block != NULL ? block : __libc_memalign(alignment, size);
}

// The size of our block at `pointer`, freed first if `release`; 0 if it is not ours.
static size_t ours(void *pointer, int release) {
  if (pointer == NULL || (uintptr_t)pointer % PAGE != 0) return 0;
  pthread_mutex_lock(&lock);
  int i = find((uintptr_t)pointer);
  size_t size = 0;
  if (i >= 0 && segments[i].used) {
    size = segments[i].size;
    if (release) give_back(i);
  }
  pthread_mutex_unlock(&lock);
  return size;
}

int posix_memalign(void **result, size_t alignment, size_t size) {
  if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  void *block = aligned(alignment, size);
  if (block == NULL && size != 0) return ENOMEM;
  *result = block;
  return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
  void *block = aligned(alignment, size);
  if (block == NULL) errno = ENOMEM;
  return block;
}

void *memalign(size_t alignment, size_t size) { return aligned_alloc(alignment, size); }

void free(void *pointer) {
  if (ours(pointer, 1) == 0) __libc_free(pointer);
}

void *realloc(void *pointer, size_t size) {
  size_t old = ours(pointer, 0);
  if (old == 0) return __libc_realloc(pointer, size);
  if (size == 0) {
    free(pointer);
    return NULL;
  }
  void *moved = __libc_malloc(size);
  if (moved == NULL) return NULL;
  memcpy(moved, pointer, size < old ? size : old);
  free(pointer);
  return moved;
}

size_t malloc_usable_size(void *pointer) {
  size_t size = ours(pointer, 0);
  if (size != 0) return size;
  return libc_usable_size != NULL ? libc_usable_size(pointer) : 0;
}

// What the Python side reads: bytes mapped, bytes in use, segments, mappings made so far.
void agg_jax_large_blocks_stats(size_t out[4]) {
  pthread_mutex_lock(&lock);
  size_t used = 0;
  for (int i = 0; i < count; i++) used += segments[i].used ? segments[i].size : 0;
  out[0] = mapped;
  out[1] = used;
  out[2] = (size_t)count;
  out[3] = mappings;
  pthread_mutex_unlock(&lock);
}

// Hands the free parts back to the system (cpu_defaults.release_free_memory).
void agg_jax_large_blocks_release(void) {
  pthread_mutex_lock(&lock);
  unmap_free();
  pthread_mutex_unlock(&lock);
}
