/* Per-thread scratch for the CPU kernels: see scratch.h. */
#include "scratch.h"

#include <stdlib.h>

static _Thread_local void *g_scratch;
static _Thread_local size_t g_scratch_bytes;

void *cpu_scratch(size_t bytes) {
  if (bytes <= g_scratch_bytes) return g_scratch;
  free(g_scratch);
  g_scratch = aligned_alloc(64, ((bytes ? bytes : 1) + 63) & ~(size_t)63);
  g_scratch_bytes = g_scratch ? bytes : 0;
  return g_scratch;
}
