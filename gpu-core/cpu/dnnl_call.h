/*
 * What every oneDNN op of the CPU backend shares (dnnl_call.c): one engine on the OpenMP runtime,
 * a primitive attribute whose scratchpad the caller supplies, and a per-call context (stream,
 * memory objects, buffers carved from a per-thread allocation) so that threads may run the same
 * cached primitive at once. Ops keep their own primitive caches (conv2d_dnnl.c, matmul_dnnl.c).
 */
#ifndef GPU_CORE_CPU_DNNL_CALL_H
#define GPU_CORE_CPU_DNNL_CALL_H

#include "../core/backend.h"

#include <oneapi/dnnl/dnnl.h>
#include <stddef.h>

#if !defined(DNNL_CPU_RUNTIME) || DNNL_CPU_RUNTIME != DNNL_RUNTIME_OMP
#error "gpu-core needs oneDNN built on the OpenMP runtime (one thread pool with the rest of the backend)"
#endif

/* The process-wide engine, created on first use (checks the loaded library's runtime too);
 * thread-safe (it takes its own lock, never held while taking another). */
gc_status dnnl_engine_get(dnnl_engine_t *engine);

/* Returns the oneDNN status of `call` from the enclosing function when it is not success. */
#define DNNL_TRY(call)                     \
  do {                                     \
    dnnl_status_t s_ = (call);             \
    if (s_ != dnnl_success) return s_;     \
  } while (0)

/* A fresh attribute with the user-supplied scratchpad mode (the caller destroys it). */
dnnl_status_t dnnl_attr_create(dnnl_primitive_attr_t *attr);

/* oneDNN's status as a gc_status with a message: "oneDNN <what> failed (<status>) for <op>". */
gc_status dnnl_fail(dnnl_status_t s, const char *what, const char *op);

/* Scratchpad bytes of a primitive (0 for none or NULL). */
size_t dnnl_scratchpad(dnnl_primitive_t p);

static inline size_t dnnl_al64(size_t n) { return (n + 63) & ~(size_t)63; }

typedef struct dnnl_call {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  dnnl_status_t s; /* the first failure; later steps do nothing */
  const char *what;
  char *buf, *pad; /* copies are carved from buf; pad is the scratchpad every primitive shares */
  size_t used;
  dnnl_memory_t mems[32]; /* destroyed by dnnl_call_end; a call makes at most ~24 */
  int nmems;
} dnnl_call;

/* Starts a call with lib_bytes of buffers (dnnl_call_take) and a pad_bytes scratchpad. */
gc_status dnnl_call_begin(dnnl_call *c, dnnl_engine_t engine, size_t lib_bytes, size_t pad_bytes,
                          const char *op);
/* A memory object over ptr (owned by the call). */
dnnl_memory_t dnnl_call_mem(dnnl_call *c, const dnnl_memory_desc_t *md, const void *ptr);
/* The next al64(bytes) of the call's buffers. */
void *dnnl_call_take(dnnl_call *c, size_t bytes);
/* Executes p with args[0..n) (room for one more: the scratchpad is appended when p has one). */
void dnnl_call_exec(dnnl_call *c, dnnl_primitive_t p, int n, dnnl_exec_arg_t *args, const char *what);
/* Ends the call (frees its objects); the first failure, described for `op`, or GC_OK. */
gc_status dnnl_call_end(dnnl_call *c, const char *op);

#endif
