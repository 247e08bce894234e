/*
 * CPU backend context and memory: tensors live in host RAM (64-byte aligned for AVX),
 * uploads and downloads are memcpy, and every op is synchronous.
 */
#include "../core/backend.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's own threads and OpenMP's spin against each other on a shared machine (a GEMM right
 * after an OpenMP loop ran 3-10x slower): keep one pool, OpenMP's, and let kernels split work
 * across it with single-threaded BLAS calls (see conv2d.c, linear.c). */
void openblas_set_num_threads(int num_threads);

struct be_ctx {
  int threads; /* OpenMP threads this context was created with */
};

const char *be_name(void) { return "cpu"; }

gc_status be_ctx_create(const char *options, be_ctx **out) {
  be_ctx *bc = calloc(1, sizeof *bc);
  if (!bc) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate the CPU context");
  bc->threads = omp_get_max_threads();
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

void be_ctx_destroy(be_ctx *bc) { free(bc); }

gc_status be_synchronize(be_ctx *bc) {
  (void)bc;
  return GC_OK;
}

void *be_alloc(be_ctx *bc, size_t bytes) {
  (void)bc;
  size_t rounded = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
  return p;
}

void be_free(be_ctx *bc, void *p) {
  (void)bc;
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
