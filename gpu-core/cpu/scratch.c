/* Per-thread scratch for the CPU kernels: see scratch.h. */
#include "scratch.h"

#include <stdlib.h>

typedef struct {
  void *p;
  size_t bytes;
} buffer;

static _Thread_local buffer g_own, g_team, g_dnnl;

static void *grow(buffer *b, size_t bytes) {
  if (b->p && bytes <= b->bytes) return b->p; /* (a first request of 0 bytes still allocates) */
  free(b->p);
  b->p = aligned_alloc(64, ((bytes ? bytes : 1) + 63) & ~(size_t)63);
  b->bytes = b->p ? bytes : 0;
  return b->p;
}

void *cpu_scratch(size_t bytes) { return grow(&g_own, bytes); }

void *cpu_scratch_team(size_t bytes) { return grow(&g_team, bytes); }

void *cpu_scratch_dnnl(size_t bytes) { return grow(&g_dnnl, bytes); }
