/*
 * The contract between the shared front end (core/handles.c: handles, tensors, arenas, errors;
 * core/ops.c: argument checks and dispatch) and a backend (cpu/ or cuda/). The front end validates every handle and shape before calling a
 * be_* kernel, so kernels take raw pointers into backend memory and plain sizes; they return
 * GC_OK, or set a message with gc_set_error() and return a status (never abort).

 */
#ifndef GPU_CORE_BACKEND_H
#define GPU_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../include/gpu_core.h"
#include "ddim.h"

/* Records a printf-style message for gc_last_error() on this thread; returns status. */
gc_status gc_set_error(gc_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct be_ctx be_ctx; /* backend state: scratch buffers, BLAS/cuDNN handles */

const char *be_name(void);
gc_status be_ctx_create(const char *options, be_ctx **out);
void be_ctx_destroy(be_ctx *bc);
gc_status be_synchronize(be_ctx *bc);

/* Backend memory. be_alloc returns NULL (with an error set) when it cannot allocate. */
void *be_alloc(be_ctx *bc, size_t bytes);
void be_free(be_ctx *bc, void *p);
gc_status be_upload(be_ctx *bc, void *dst, const void *host, size_t bytes);
gc_status be_download(be_ctx *bc, void *host, const void *src, size_t bytes);

/* The kernels (core/kernels.def). */
#define GC_KERNEL(name, params) gc_status be_##name params;
#include "kernels.def"
#undef GC_KERNEL

#endif /* GPU_CORE_BACKEND_H */
