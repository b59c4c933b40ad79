/* malloc_count.so: an LD_PRELOAD heap-allocation counter for `make bench`
 * (scenario 7). run.sh compiles it:
 *
 *   cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c
 *
 * Every call to malloc, calloc, realloc, posix_memalign, aligned_alloc,
 * memalign, valloc and pvalloc (C++ operator new ends in one of them) bumps a
 * counter; free is counted separately. The counters live in a file mapped
 * MAP_SHARED, named by $MALLOC_COUNT_FILE, so they can be read at any moment
 * without signalling the process (the proxies use SIGUSR1/SIGUSR2/SIGHUP for
 * their own purposes), and a process that forks (nginx's master and its
 * workers) adds into the same counters: the file holds the whole process
 * tree's total. Layout: 8 little-endian uint64 -
 *   [0] allocations (all the functions above)  [1] frees
 *   [2] malloc [3] calloc [4] realloc [5] the aligned family
 *   [6] magic 0x6d636e74 once the mapping is live [7] reserved
 * At exit, when $MALLOC_COUNT_VERBOSE is set, the totals are printed on stderr.
 *
 * The real functions are glibc's __libc_* entry points, so no dlsym (which
 * itself calls calloc) is needed. Allocations made before the constructor ran
 * (the dynamic loader, earlier constructors) go to a private array; only
 * differences between two readings at steady state matter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);
extern void __libc_free(void*);

enum { ALLOCS, FREES, MALLOCS, CALLOCS, REALLOCS, ALIGNED, MAGIC, SLOTS = 8 };

static uint64_t early[SLOTS];
static uint64_t* counts = early;

static inline void bump(int kind) {
  __atomic_fetch_add(&counts[ALLOCS], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&counts[kind], 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void mc_init(void) {
  const char* path = getenv("MALLOC_COUNT_FILE");
  if (!path || !*path) return;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (ftruncate(fd, SLOTS * sizeof(uint64_t)) == 0) {
    void* p = mmap(NULL, SLOTS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
      counts = (uint64_t*)p;
      counts[MAGIC] = 0x6d636e74;
    }
  }
  close(fd);
}

__attribute__((destructor)) static void mc_fini(void) {
  if (!getenv("MALLOC_COUNT_VERBOSE")) return;
  char line[160];
  int n = snprintf(line, sizeof line, "malloc_count[%d]: allocations=%llu frees=%llu\n", (int)getpid(),
                   (unsigned long long)counts[ALLOCS], (unsigned long long)counts[FREES]);
  if (n > 0) (void)!write(2, line, (size_t)n);
}

void* malloc(size_t n) {
  bump(MALLOCS);
  return __libc_malloc(n);
}

void* calloc(size_t k, size_t n) {
  bump(CALLOCS);
  return __libc_calloc(k, n);
}

void* realloc(void* p, size_t n) {
  bump(REALLOCS);
  return __libc_realloc(p, n);
}

void free(void* p) {
  if (p) __atomic_fetch_add(&counts[FREES], 1, __ATOMIC_RELAXED);
  __libc_free(p);
}

void* memalign(size_t a, size_t n) {
  bump(ALIGNED);
  return __libc_memalign(a, n);
}

void* aligned_alloc(size_t a, size_t n) {
  bump(ALIGNED);
  return __libc_memalign(a, n);
}

int posix_memalign(void** out, size_t a, size_t n) {
  bump(ALIGNED);
  if (a < sizeof(void*) || (a & (a - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

void* valloc(size_t n) {
  bump(ALIGNED);
  return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void* pvalloc(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  bump(ALIGNED);
  return __libc_memalign(page, (n + page - 1) & ~(page - 1));
}
