/* Front-end internals shared by handles.c and ops.c (not part of the ABI). */
#ifndef GPU_CORE_INTERNAL_H
#define GPU_CORE_INTERNAL_H

#include "backend.h"

enum { KIND_CTX = 1, KIND_ARENA = 2, KIND_TENSOR = 3 };
enum { ARENA_MAX_CHUNKS = 64 };

typedef struct gc_ctx {
  gc_handle id;
  be_ctx *be;
  int64_t in_use, peak; /* bytes of backend memory */
} gc_ctx;

typedef struct arena_chunk {
  void *data;
  int64_t cap, used;
} arena_chunk;

typedef struct gc_arena {
  gc_handle id;
  gc_ctx *ctx;
  int nchunks;
  int current; /* chunk that bump allocation continues in */
  arena_chunk chunks[ARENA_MAX_CHUNKS];
} gc_arena;

/* An own allocation shared by a tensor and its views (refcounted). */
typedef struct gc_storage {
  void *data;
  int64_t bytes;
  int refs;
} gc_storage;

typedef struct gc_tensor {
  gc_handle id;
  gc_ctx *ctx;
  gc_storage *storage; /* NULL for arena tensors */
  gc_arena *arena;     /* NULL for own allocations and their views */
  void *data;          /* first element, in backend memory */
  gc_dtype dtype;
  int32_t ndim;
  int64_t dims[GC_MAX_DIMS];
  int64_t numel;
} gc_tensor;

void gc_begin_op(const char *name);
gc_ctx *gc_get_ctx(gc_handle h);
/* Live tensor of context c (any context when c is NULL); sets an error naming `what`. */
gc_tensor *gc_get_tensor(gc_ctx *c, gc_handle h, const char *what);
size_t gc_dtype_size(gc_dtype d);

#endif /* GPU_CORE_INTERNAL_H */
