/*
 * Handle table, contexts, arenas and tensors: the part of the ABI that is the same for every
 * backend. Handles are (generation << 24 | slot) so a closed or stale handle is recognised
 * instead of dereferenced; every lookup also checks the handle's kind and context.
 */
#include "internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------------------- */

static _Thread_local char g_error[1024];
static _Thread_local const char *g_op = "";

const char *gc_last_error(void) { return g_error; }

void gc_begin_op(const char *name) {
  g_op = name;
  g_error[0] = '\0';
}

gc_status gc_set_error(gc_status status, const char *fmt, ...) {
  int n = snprintf(g_error, sizeof g_error, "%s%s", g_op, g_op[0] ? ": " : "");
  if (n < 0 || (size_t)n >= sizeof g_error) n = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_error + n, sizeof g_error - (size_t)n, fmt, ap);
  va_end(ap);
  return status;
}

int32_t gc_abi_version(void) { return GC_ABI_VERSION; }
const char *gc_backend_name(void) { return be_name(); }

/* ---- handle table ---------------------------------------------------------------------- */

enum { SLOT_BITS = 24, MAX_SLOTS = 1 << SLOT_BITS };

typedef struct slot {
  uint32_t gen; /* bumped on every free; the handle's generation must match */
  uint8_t kind; /* 0 = free */
  void *obj;
  int32_t next_free;
} slot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static slot *g_slots;
static int32_t g_nslots, g_free = -1;

static const char *kind_name(int kind) {
  switch (kind) {
  case KIND_CTX: return "context";
  case KIND_ARENA: return "arena";
  case KIND_TENSOR: return "tensor";
  default: return "free slot";
  }
}

/* Returns a new handle for obj, or 0 when the table is full. Caller holds no lock. */
static gc_handle handle_new(int kind, void *obj) {
  pthread_mutex_lock(&g_lock);
  int32_t i = g_free;
  if (i >= 0) {
    g_free = g_slots[i].next_free;
  } else {
    if (g_nslots == MAX_SLOTS) {
      pthread_mutex_unlock(&g_lock);
      return 0;
    }
    int32_t cap = g_nslots ? g_nslots * 2 : 256;
    if (cap > MAX_SLOTS) cap = MAX_SLOTS;
    slot *grown = realloc(g_slots, (size_t)cap * sizeof(slot));
    if (!grown) {
      pthread_mutex_unlock(&g_lock);
      return 0;
    }
    g_slots = grown;
    for (int32_t j = g_nslots; j < cap; j++) g_slots[j] = (slot){.gen = 1, .next_free = -1};
    /* slots g_nslots+1 .. cap-1 go on the free list; g_nslots is taken now */
    for (int32_t j = cap - 1; j > g_nslots; j--) {
      g_slots[j].next_free = g_free;
      g_free = j;
    }
    i = g_nslots;
    g_nslots = cap;
  }
  g_slots[i].kind = (uint8_t)kind;
  g_slots[i].obj = obj;
  gc_handle h = ((gc_handle)g_slots[i].gen << SLOT_BITS) | i;
  pthread_mutex_unlock(&g_lock);
  return h;
}

static void handle_release_locked(gc_handle h) {
  int32_t i = (int32_t)(h & (MAX_SLOTS - 1));
  g_slots[i].kind = 0;
  g_slots[i].obj = NULL;
  g_slots[i].gen = (g_slots[i].gen + 1) & 0x1FFFFFFF; /* keep handles below 2^53 */
  if (g_slots[i].gen == 0) g_slots[i].gen = 1;
  g_slots[i].next_free = g_free;
  g_free = i;
}

/* Looks up a live handle of the given kind; sets an error naming `what` otherwise. */
static void *handle_get(gc_handle h, int kind, const char *what) {
  if (h <= 0) {
    gc_set_error(GC_ERR_HANDLE, "%s: handle %lld is not a valid %s handle", what, (long long)h,
                 kind_name(kind));
    return NULL;
  }
  int32_t i = (int32_t)(h & (MAX_SLOTS - 1));
  uint32_t gen = (uint32_t)(h >> SLOT_BITS);
  void *obj = NULL;
  int found_kind = 0;
  pthread_mutex_lock(&g_lock);
  if (i < g_nslots && g_slots[i].gen == gen) {
    found_kind = g_slots[i].kind;
    obj = g_slots[i].obj;
  }
  pthread_mutex_unlock(&g_lock);
  if (!obj) {
    gc_set_error(GC_ERR_HANDLE,
                 "%s: %s handle %lld is closed or stale (freed, or released by an arena reset)",
                 what, kind_name(kind), (long long)h);
    return NULL;
  }
  if (found_kind != kind) {
    gc_set_error(GC_ERR_HANDLE, "%s: handle %lld is a %s, expected a %s", what, (long long)h,
                 kind_name(found_kind), kind_name(kind));
    return NULL;
  }
  return obj;
}

/* ---- contexts -------------------------------------------------------------------------- */

gc_ctx *gc_get_ctx(gc_handle h) { return handle_get(h, KIND_CTX, "context"); }

static void account(gc_ctx *c, int64_t delta) {
  c->in_use += delta;
  if (c->in_use > c->peak) c->peak = c->in_use;
}

gc_status gc_ctx_create(const char *options, gc_handle *out_ctx) {
  gc_begin_op("gc_ctx_create");
  if (!out_ctx) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "out_ctx is NULL");
  *out_ctx = 0;
  gc_ctx *c = calloc(1, sizeof *c);
  if (!c) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate a context");
  gc_status s = be_ctx_create(options ? options : "", &c->be);
  if (s != GC_OK) {
    free(c);
    return s;
  }
  c->id = handle_new(KIND_CTX, c);
  if (!c->id) {
    be_ctx_destroy(c->be);
    free(c);
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "handle table is full");
  }
  *out_ctx = c->id;
  return GC_OK;
}

static void tensor_release(gc_tensor *t);
static void arena_release(gc_arena *a);

gc_status gc_ctx_destroy(gc_handle ctx) {
  gc_begin_op("gc_ctx_destroy");
  gc_ctx *c = gc_get_ctx(ctx);
  if (!c) return GC_ERR_HANDLE;
  /* Tensors first (they may reference arenas and storages), then arenas. */
  for (int pass = 0; pass < 2; pass++) {
    pthread_mutex_lock(&g_lock);
    for (int32_t i = 0; i < g_nslots; i++) {
      slot *s = &g_slots[i];
      if (pass == 0 && s->kind == KIND_TENSOR && ((gc_tensor *)s->obj)->ctx == c) {
        gc_tensor *t = s->obj;
        handle_release_locked(t->id);
        tensor_release(t);
      } else if (pass == 1 && s->kind == KIND_ARENA && ((gc_arena *)s->obj)->ctx == c) {
        gc_arena *a = s->obj;
        handle_release_locked(a->id);
        arena_release(a);
      }
    }
    pthread_mutex_unlock(&g_lock);
  }
  pthread_mutex_lock(&g_lock);
  handle_release_locked(c->id);
  pthread_mutex_unlock(&g_lock);
  be_ctx_destroy(c->be);
  free(c);
  return GC_OK;
}

gc_status gc_ctx_synchronize(gc_handle ctx) {
  gc_begin_op("gc_ctx_synchronize");
  gc_ctx *c = gc_get_ctx(ctx);
  if (!c) return GC_ERR_HANDLE;
  return be_synchronize(c->be);
}

gc_status gc_ctx_memory(gc_handle ctx, int64_t *out_in_use, int64_t *out_peak) {
  gc_begin_op("gc_ctx_memory");
  gc_ctx *c = gc_get_ctx(ctx);
  if (!c) return GC_ERR_HANDLE;
  if (out_in_use) *out_in_use = c->in_use;
  if (out_peak) *out_peak = c->peak;
  return GC_OK;
}

/* ---- arenas ---------------------------------------------------------------------------- */

enum { ARENA_ALIGN = 256 };
static const int64_t MAX_ALLOC_BYTES = (int64_t)1 << 42; /* 4 TiB: beyond any device */

static gc_status arena_add_chunk(gc_arena *a, int64_t bytes) {
  if (a->nchunks == ARENA_MAX_CHUNKS)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "arena has %d chunks; reset it", ARENA_MAX_CHUNKS);
  void *p = be_alloc(a->ctx->be, (size_t)bytes);
  if (!p) return GC_ERR_OUT_OF_MEMORY;
  a->chunks[a->nchunks++] = (arena_chunk){.data = p, .cap = bytes, .used = 0};
  account(a->ctx, bytes);
  return GC_OK;
}

gc_status gc_arena_create(gc_handle ctx, int64_t initial_bytes, gc_handle *out_arena) {
  gc_begin_op("gc_arena_create");
  if (!out_arena) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "out_arena is NULL");
  *out_arena = 0;
  gc_ctx *c = gc_get_ctx(ctx);
  if (!c) return GC_ERR_HANDLE;
  if (initial_bytes < 0 || initial_bytes > MAX_ALLOC_BYTES)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate an arena of %lld bytes",
                        (long long)initial_bytes);
  gc_arena *a = calloc(1, sizeof *a);
  if (!a) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate an arena");
  a->ctx = c;
  if (initial_bytes > 0) {
    gc_status s = arena_add_chunk(a, initial_bytes);
    if (s != GC_OK) {
      free(a);
      return s;
    }
  }
  a->id = handle_new(KIND_ARENA, a);
  if (!a->id) {
    arena_release(a);
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "handle table is full");
  }
  *out_arena = a->id;
  return GC_OK;
}

/* Frees the arena's memory (its tensors' handles must already be released). */
static void arena_release(gc_arena *a) {
  for (int i = 0; i < a->nchunks; i++) {
    be_free(a->ctx->be, a->chunks[i].data);
    account(a->ctx, -a->chunks[i].cap);
  }
  free(a);
}

/* Releases every tensor carved from arena a. */
static void arena_release_tensors(gc_arena *a) {
  pthread_mutex_lock(&g_lock);
  for (int32_t i = 0; i < g_nslots; i++) {
    slot *s = &g_slots[i];
    if (s->kind == KIND_TENSOR && ((gc_tensor *)s->obj)->arena == a) {
      gc_tensor *t = s->obj;
      handle_release_locked(t->id);
      free(t);
    }
  }
  pthread_mutex_unlock(&g_lock);
}

gc_status gc_arena_reset(gc_handle arena) {
  gc_begin_op("gc_arena_reset");
  gc_arena *a = handle_get(arena, KIND_ARENA, "arena");
  if (!a) return GC_ERR_HANDLE;
  arena_release_tensors(a);
  /* Chunks are kept: the next step reuses the same (already faulted-in) memory. */
  for (int i = 0; i < a->nchunks; i++) a->chunks[i].used = 0;
  a->current = 0;
  return GC_OK;
}

gc_status gc_arena_destroy(gc_handle arena) {
  gc_begin_op("gc_arena_destroy");
  gc_arena *a = handle_get(arena, KIND_ARENA, "arena");
  if (!a) return GC_ERR_HANDLE;
  arena_release_tensors(a);
  pthread_mutex_lock(&g_lock);
  handle_release_locked(a->id);
  pthread_mutex_unlock(&g_lock);
  arena_release(a);
  return GC_OK;
}

/* Bump allocation through the chunks in order; a new chunk (twice the last) when none fits. */
static void *arena_alloc(gc_arena *a, int64_t bytes) {
  int64_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  for (; a->current < a->nchunks; a->current++) {
    arena_chunk *ch = &a->chunks[a->current];
    if (ch->cap - ch->used >= need) {
      void *p = (char *)ch->data + ch->used;
      ch->used += need;
      return p;
    }
  }
  int64_t last = a->nchunks ? a->chunks[a->nchunks - 1].cap : 0;
  int64_t cap = last * 2 > need ? last * 2 : need;
  if (cap < ((int64_t)1 << 20)) cap = (int64_t)1 << 20;
  if (arena_add_chunk(a, cap) != GC_OK) return NULL;
  a->current = a->nchunks - 1;
  arena_chunk *ch = &a->chunks[a->current];
  ch->used = need;
  return ch->data;
}

/* ---- tensors --------------------------------------------------------------------------- */

size_t gc_dtype_size(gc_dtype d) { return d == GC_I32 ? sizeof(int32_t) : sizeof(float); }

static gc_status check_dims(int32_t ndim, const int64_t *dims, int64_t *out_numel) {
  if (ndim < 1 || ndim > GC_MAX_DIMS)
    return gc_set_error(GC_ERR_SHAPE, "ndim must be 1..%d, got %d", GC_MAX_DIMS, ndim);
  if (!dims) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "dims is NULL");
  int64_t n = 1;
  for (int32_t i = 0; i < ndim; i++) {
    if (dims[i] < 1)
      return gc_set_error(GC_ERR_SHAPE, "dimension %d is %lld; dimensions must be >= 1", i,
                          (long long)dims[i]);
    if (n > MAX_ALLOC_BYTES / dims[i])
      return gc_set_error(GC_ERR_OUT_OF_MEMORY, "shape too large to allocate");
    n *= dims[i];
  }
  *out_numel = n;
  return GC_OK;
}

static void tensor_release(gc_tensor *t) {
  if (t->storage && --t->storage->refs == 0) {
    be_free(t->ctx->be, t->storage->data);
    account(t->ctx, -t->storage->bytes);
    free(t->storage);
  }
  free(t);
}

static gc_status tensor_register(gc_tensor *t, gc_handle *out) {
  t->id = handle_new(KIND_TENSOR, t);
  if (!t->id) {
    tensor_release(t);
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "handle table is full");
  }
  *out = t->id;
  return GC_OK;
}

gc_status gc_tensor_new(gc_handle ctx, gc_handle arena, gc_dtype dtype, int32_t ndim,
                        const int64_t *dims, gc_handle *out_tensor) {
  gc_begin_op("gc_tensor_new");
  if (!out_tensor) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "out_tensor is NULL");
  *out_tensor = 0;
  gc_ctx *c = gc_get_ctx(ctx);
  if (!c) return GC_ERR_HANDLE;
  if (dtype != GC_F32 && dtype != GC_I32)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "unknown dtype %d", (int)dtype);
  int64_t numel;
  gc_status s = check_dims(ndim, dims, &numel);
  if (s != GC_OK) return s;
  int64_t bytes = numel * (int64_t)gc_dtype_size(dtype);
  if (bytes > MAX_ALLOC_BYTES)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate %lld bytes", (long long)bytes);
  gc_arena *a = NULL;
  if (arena) {
    a = handle_get(arena, KIND_ARENA, "arena");
    if (!a) return GC_ERR_HANDLE;
    if (a->ctx != c) return gc_set_error(GC_ERR_HANDLE, "arena belongs to another context");
  }
  gc_tensor *t = calloc(1, sizeof *t);
  if (!t) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate a tensor record");
  t->ctx = c;
  t->dtype = dtype;
  t->ndim = ndim;
  memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
  t->numel = numel;
  if (a) {
    t->arena = a;
    t->data = arena_alloc(a, bytes);
    if (!t->data) {
      free(t);
      return GC_ERR_OUT_OF_MEMORY;
    }
  } else {
    gc_storage *st = calloc(1, sizeof *st);
    void *p = st ? be_alloc(c->be, (size_t)bytes) : NULL;
    if (!p) {
      if (!st) gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate a storage record");
      free(st);
      free(t);
      return GC_ERR_OUT_OF_MEMORY;
    }
    st->data = p;
    st->bytes = bytes;
    st->refs = 1;
    account(c, bytes);
    t->storage = st;
    t->data = p;
  }
  return tensor_register(t, out_tensor);
}

gc_tensor *gc_get_tensor(gc_ctx *c, gc_handle h, const char *what) {
  gc_tensor *t = handle_get(h, KIND_TENSOR, what);
  if (t && c && t->ctx != c) {
    gc_set_error(GC_ERR_HANDLE, "%s: tensor belongs to another context", what);
    return NULL;
  }
  return t;
}

gc_status gc_tensor_view(gc_handle src, int64_t offset, int32_t ndim, const int64_t *dims,
                         gc_handle *out_tensor) {
  gc_begin_op("gc_tensor_view");
  if (!out_tensor) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "out_tensor is NULL");
  *out_tensor = 0;
  gc_tensor *s = gc_get_tensor(NULL, src, "src");
  if (!s) return GC_ERR_HANDLE;
  int64_t numel;
  gc_status st = check_dims(ndim, dims, &numel);
  if (st != GC_OK) return st;
  if (offset < 0 || offset > s->numel || numel > s->numel - offset)
    return gc_set_error(GC_ERR_SHAPE,
                        "view of %lld elements at offset %lld exceeds the source's %lld elements",
                        (long long)numel, (long long)offset, (long long)s->numel);
  gc_tensor *t = calloc(1, sizeof *t);
  if (!t) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate a tensor record");
  *t = *s;
  t->ndim = ndim;
  memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
  t->numel = numel;
  t->data = (char *)s->data + offset * (int64_t)gc_dtype_size(s->dtype);
  if (t->storage) t->storage->refs++;
  return tensor_register(t, out_tensor);
}

gc_status gc_tensor_free(gc_handle tensor) {
  gc_begin_op("gc_tensor_free");
  gc_tensor *t = gc_get_tensor(NULL, tensor, "tensor");
  if (!t) return GC_ERR_HANDLE;
  pthread_mutex_lock(&g_lock);
  handle_release_locked(t->id);
  pthread_mutex_unlock(&g_lock);
  tensor_release(t);
  return GC_OK;
}

gc_status gc_tensor_info(gc_handle tensor, int32_t *out_dtype, int32_t *out_ndim,
                         int64_t *out_dims) {
  gc_begin_op("gc_tensor_info");
  gc_tensor *t = gc_get_tensor(NULL, tensor, "tensor");
  if (!t) return GC_ERR_HANDLE;
  if (out_dtype) *out_dtype = t->dtype;
  if (out_ndim) *out_ndim = t->ndim;
  if (out_dims)
    for (int i = 0; i < GC_MAX_DIMS; i++) out_dims[i] = i < t->ndim ? t->dims[i] : 0;
  return GC_OK;
}

static gc_status transfer_check(gc_tensor *t, int64_t offset, const void *host, int64_t nbytes) {
  int64_t esz = (int64_t)gc_dtype_size(t->dtype);
  if (!host && nbytes > 0) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "host pointer is NULL");
  if (nbytes < 0 || nbytes % esz)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "nbytes %lld is not a multiple of %lld",
                        (long long)nbytes, (long long)esz);
  if (offset < 0 || offset > t->numel || nbytes / esz > t->numel - offset)
    return gc_set_error(GC_ERR_SHAPE,
                        "%lld elements at offset %lld exceed the tensor's %lld elements",
                        (long long)(nbytes / esz), (long long)offset, (long long)t->numel);
  return GC_OK;
}

gc_status gc_tensor_write(gc_handle tensor, int64_t offset, const void *host, int64_t nbytes) {
  gc_begin_op("gc_tensor_write");
  gc_tensor *t = gc_get_tensor(NULL, tensor, "tensor");
  if (!t) return GC_ERR_HANDLE;
  gc_status s = transfer_check(t, offset, host, nbytes);
  if (s != GC_OK || nbytes == 0) return s;
  return be_upload(t->ctx->be, (char *)t->data + offset * (int64_t)gc_dtype_size(t->dtype), host,
                   (size_t)nbytes);
}

gc_status gc_tensor_read(gc_handle tensor, int64_t offset, void *host, int64_t nbytes) {
  gc_begin_op("gc_tensor_read");
  gc_tensor *t = gc_get_tensor(NULL, tensor, "tensor");
  if (!t) return GC_ERR_HANDLE;
  gc_status s = transfer_check(t, offset, host, nbytes);
  if (s != GC_OK || nbytes == 0) return s;
  return be_download(t->ctx->be, host,
                     (const char *)t->data + offset * (int64_t)gc_dtype_size(t->dtype),
                     (size_t)nbytes);
}
