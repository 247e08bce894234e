/*
 * gpu-core: the numeric engine of the DDPO system. One C ABI, two backends built as separate
 * shared libraries (libgpucore_cpu.so: C11 + OpenMP + CBLAS; libgpucore_cuda.so: cuBLAS +
 * cuDNN). The host chooses a backend by loading one of them.
 *
 * Conventions
 * - Every call returns a gc_status; on failure gc_last_error() gives a message (thread-local).
 *   Nothing in the library aborts or exits the host process.
 * - Handles (context, arena, tensor) are opaque 64-bit integers below 2^53 (safe as JS numbers).
 *   0 means "none" where an argument is optional. A closed, stale or foreign handle is an error.
 * - Tensor memory belongs to the backend (host RAM for CPU, device memory for CUDA). The host
 *   moves data only through gc_tensor_write / gc_tensor_read; it never aliases tensor memory.
 * - Tensors are dense, row-major, up to GC_MAX_DIMS dims. Images are NCHW.
 * - A tensor is either a fresh allocation, a view (a contiguous range of another tensor's storage,
 *   e.g. one parameter inside the flat parameter buffer), or carved from an arena. Arena tensors
 *   become invalid (stale handles) when their arena is reset.
 * - Ops: one function per op and direction. Forward outputs and activation gradients are written
 *   (=); parameter gradients (dw, db, dgamma, ...) accumulate (+=). Optional outputs may be 0.
 * - Small per-call scalars (alphas of a DDIM step, result norms) travel in host memory.
 */
#ifndef GPU_CORE_H
#define GPU_CORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GC_ABI_VERSION 1
#define GC_MAX_DIMS 6

typedef enum gc_status {
  GC_OK = 0,
  GC_ERR_INVALID_ARGUMENT = 1, /* bad scalar argument, out-of-range id, NaN where forbidden */
  GC_ERR_SHAPE = 2,            /* tensor shapes or sizes do not fit the op */
  GC_ERR_HANDLE = 3,           /* closed, stale (arena reset) or foreign handle */
  GC_ERR_OUT_OF_MEMORY = 4,    /* allocation cannot be satisfied */
  GC_ERR_UNSUPPORTED = 5,      /* op or option not implemented by this backend */
  GC_ERR_BACKEND = 6           /* backend runtime failure (CUDA error, ...) */
} gc_status;

typedef enum gc_dtype { GC_F32 = 0, GC_I32 = 1 } gc_dtype;

typedef enum gc_activation {
  GC_ACT_SILU = 0,       /* x * sigmoid(x) */
  GC_ACT_GELU = 1,       /* 0.5 x (1 + erf(x / sqrt 2)), PyTorch approximate='none' */
  GC_ACT_GELU_TANH = 2,  /* PyTorch approximate='tanh' */
  GC_ACT_QUICK_GELU = 3  /* x * sigmoid(1.702 x), CLIP */
} gc_activation;

typedef int64_t gc_handle;

/* Every function of the API, with its documentation: include/gc_api.def. The library is built with
 * -fvisibility=hidden, so these are the only symbols it exports (not the backend's be_* kernels
 * or its oneDNN helpers). */
#if defined(__GNUC__)
#define GC_EXPORT __attribute__((visibility("default")))
#else
#define GC_EXPORT
#endif
#define GC_API(returns, name, params) GC_EXPORT returns name params;
#include "gc_api.def"
#undef GC_API

#ifdef __cplusplus
}
#endif

#endif /* GPU_CORE_H */
