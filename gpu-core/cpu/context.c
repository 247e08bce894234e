/*
 * CPU backend context and memory: tensors live in host RAM (64-byte aligned for AVX),
 * uploads and downloads are memcpy, and every op is synchronous.
 */
#include "../core/backend.h"

#include <malloc.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's own threads and OpenMP's spin against each other on a shared machine (a GEMM right
 * after an OpenMP loop ran 3-10x slower): keep one pool, OpenMP's, and let kernels split work
 * across it with single-threaded BLAS calls (see conv2d.c, linear.c). */
void openblas_set_num_threads(int num_threads);

/* Freed tensor storage of at least POOL_MIN_BYTES is kept for a later allocation of about the
 * same size, up to POOL_MAX_BYTES in all: a training step frees and allocates the same gradient
 * buffers every step, and pages fresh from the system cost a fault each on first touch (the
 * kernel's fault path took ~8% of a batch-32 training step, `perf`). Not counted as the engine's
 * memory (it is free to the engine), but the process keeps it until the context is destroyed. */
enum { POOL_SLOTS = 128 };
static const size_t POOL_MIN_BYTES = (size_t)1 << 16;
static const size_t POOL_MAX_BYTES = (size_t)1 << 29;

typedef struct {
  void *p;
  size_t bytes; /* malloc_usable_size(p) */
} pooled;

struct be_ctx {
  int threads; /* OpenMP threads this context was created with */
  pthread_mutex_t lock; /* the pool */
  pooled pool[POOL_SLOTS];
  int npool;
  size_t pool_bytes;
};

const char *be_name(void) { return "cpu"; }

gc_status be_ctx_create(const char *options, be_ctx **out) {
  be_ctx *bc = calloc(1, sizeof *bc);
  if (!bc) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate the CPU context");
  bc->threads = omp_get_max_threads();
  pthread_mutex_init(&bc->lock, NULL);
  openblas_set_num_threads(1);
  if (options && options[0] && strncmp(options, "threads=", 8) == 0) {
    int n = atoi(options + 8);
    if (n < 1) {
      free(bc);
      return gc_set_error(GC_ERR_INVALID_ARGUMENT, "threads must be >= 1 in options '%s'", options);
    }
    bc->threads = n;
    omp_set_num_threads(n);
  } else if (options && options[0]) {
    free(bc);
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "unknown CPU backend option '%s' (known: threads=N)",
                        options);
  }
  *out = bc;
  return GC_OK;
}

void be_ctx_destroy(be_ctx *bc) {
  for (int i = 0; i < bc->npool; i++) free(bc->pool[i].p);
  pthread_mutex_destroy(&bc->lock);
  free(bc);
}

gc_status be_synchronize(be_ctx *bc) {
  (void)bc;
  return GC_OK;
}

void *be_alloc(be_ctx *bc, size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  if (rounded >= POOL_MIN_BYTES) { /* the smallest pooled block that fits, wasting < 1/8 */
    void *p = NULL;
    pthread_mutex_lock(&bc->lock);
    int best = -1;
    for (int i = 0; i < bc->npool; i++) {
      const size_t b = bc->pool[i].bytes;
      if (b >= rounded && b - rounded <= rounded / 8 && (best < 0 || b < bc->pool[best].bytes)) best = i;
    }
    if (best >= 0) {
      p = bc->pool[best].p;
      bc->pool_bytes -= bc->pool[best].bytes;
      bc->pool[best] = bc->pool[--bc->npool];
    }
    pthread_mutex_unlock(&bc->lock);
    if (p) return p;
  }
  void *p = aligned_alloc(64, rounded);
  if (!p) gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
  return p;
}

void be_free(be_ctx *bc, void *p) {
  if (!p) return;
  const size_t bytes = malloc_usable_size(p);
  if (bytes >= POOL_MIN_BYTES) {
    pthread_mutex_lock(&bc->lock);
    const int keep = bc->npool < POOL_SLOTS && bc->pool_bytes + bytes <= POOL_MAX_BYTES;
    if (keep) {
      bc->pool[bc->npool++] = (pooled){.p = p, .bytes = bytes};
      bc->pool_bytes += bytes;
    }
    pthread_mutex_unlock(&bc->lock);
    if (keep) return;
  }
  free(p);
}

gc_status be_upload(be_ctx *bc, void *dst, const void *host, size_t bytes) {
  (void)bc;
  memcpy(dst, host, bytes);
  return GC_OK;
}

gc_status be_download(be_ctx *bc, void *host, const void *src, size_t bytes) {
  (void)bc;
  memcpy(host, src, bytes);
  return GC_OK;
}
