/*
 * CUDA backend context and memory: tensors live in device memory (cudaMalloc, 256-byte
 * aligned), uploads are stream-ordered copies, downloads synchronise the stream so the host sees
 * every op queued before them.
 */
#include "common.h"

#include <cstdlib>
#include <cstring>

/* ---- errors ---- */

gc_status cuda_status(cudaError_t err, const char *what) {
  if (err == cudaSuccess) return GC_OK;
  cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
  if (err == cudaErrorMemoryAllocation)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "%s: out of device memory", what);
  return gc_set_error(GC_ERR_BACKEND, "%s: CUDA error %s (%s)", what, cudaGetErrorName(err),
                      cudaGetErrorString(err));
}

gc_status cublas_status(cublasStatus_t st, const char *what) {
  if (st == CUBLAS_STATUS_SUCCESS) return GC_OK;
  if (st == CUBLAS_STATUS_ALLOC_FAILED)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "%s: cuBLAS could not allocate", what);
  return gc_set_error(GC_ERR_BACKEND, "%s: cuBLAS error %s (%s)", what, cublasGetStatusName(st),
                      cublasGetStatusString(st));
}

gc_status cudnn_status(cudnnStatus_t st, const char *what) {
  if (st == CUDNN_STATUS_SUCCESS) return GC_OK;
  if (st == CUDNN_STATUS_ALLOC_FAILED)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "%s: cuDNN could not allocate", what);
  return gc_set_error(GC_ERR_BACKEND, "%s: cuDNN error %s", what, cudnnGetErrorString(st));
}

gc_status launch_status(const char *kernel) {
  return cuda_status(cudaGetLastError(), kernel);
}

gc_status ctx_enter(be_ctx *bc) {
  return cuda_status(cudaSetDevice(bc->device), "cudaSetDevice");
}

void *scratch_get(be_ctx *bc, size_t bytes) {
  if (bytes <= bc->scratch_bytes) return bc->scratch;
  if (bc->scratch) cudaFree(bc->scratch); /* waits for queued work that may still read it */
  bc->scratch = NULL;
  bc->scratch_bytes = 0;
  size_t rounded = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* whole MiB */
  void *p = NULL;
  if (cuda_status(cudaMalloc(&p, rounded), "scratch allocation") != GC_OK) return NULL;
  bc->scratch = p;
  bc->scratch_bytes = rounded;
  return p;
}

/* ---- context ---- */

void conv_plans_destroy(be_ctx *bc); /* conv2d.cu */

const char *be_name(void) { return "cuda"; }

/* options: "" or comma-separated "device=N", "tf32=0|1". */
static gc_status parse_options(const char *options, int *device, int *tf32) {
  const char *p = options ? options : "";
  while (*p) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char item[64];
    if (len >= sizeof item)
      return gc_set_error(GC_ERR_INVALID_ARGUMENT, "CUDA backend option too long in '%s'", options);
    memcpy(item, p, len);
    item[len] = '\0';
    char *rest = NULL;
    if (strncmp(item, "device=", 7) == 0) {
      long v = strtol(item + 7, &rest, 10);
      if (rest == item + 7 || *rest || v < 0)
        return gc_set_error(GC_ERR_INVALID_ARGUMENT, "device must be an index >= 0 in '%s'", options);
      *device = (int)v;
    } else if (strncmp(item, "tf32=", 5) == 0) {
      long v = strtol(item + 5, &rest, 10);
      if (rest == item + 5 || *rest || (v != 0 && v != 1))
        return gc_set_error(GC_ERR_INVALID_ARGUMENT, "tf32 must be 0 or 1 in '%s'", options);
      *tf32 = (int)v;
    } else if (len > 0) {
      return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                          "unknown CUDA backend option '%s' (known: device=N, tf32=0|1)", item);
    }
    p += len + (end ? 1 : 0);
  }
  return GC_OK;
}

gc_status be_ctx_create(const char *options, be_ctx **out) {
  int device = 0, tf32 = 0;
  GC_CHECK(parse_options(options, &device, &tf32));
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return gc_set_error(GC_ERR_BACKEND, "no usable CUDA device: %s (%s)", cudaGetErrorName(err),
                        cudaGetErrorString(err));
  }
  if (device >= count)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "device %d requested but %d CUDA device(s) found",
                        device, count);
  be_ctx *bc = (be_ctx *)calloc(1, sizeof *bc);
  if (!bc) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate the CUDA context");
  bc->plans = (conv_plan *)NULL;
  bc->device = device;
  bc->allow_tf32 = tf32;
  gc_status s = ctx_enter(bc);
  if (s == GC_OK)
    s = cuda_status(cudaDeviceGetAttribute(&bc->sm_count, cudaDevAttrMultiProcessorCount, device),
                    "cudaDeviceGetAttribute");
  if (s == GC_OK)
    s = cuda_status(cudaStreamCreateWithFlags(&bc->stream, cudaStreamNonBlocking),
                    "cudaStreamCreate");
  if (s == GC_OK) s = cublas_status(cublasCreate(&bc->cublas), "cublasCreate");
  if (s == GC_OK) s = cublas_status(cublasSetStream(bc->cublas, bc->stream), "cublasSetStream");
  if (s == GC_OK)
    s = cublas_status(
        cublasSetMathMode(bc->cublas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
        "cublasSetMathMode");
  if (s == GC_OK) s = cudnn_status(cudnnCreate(&bc->cudnn), "cudnnCreate");
  if (s == GC_OK) s = cudnn_status(cudnnSetStream(bc->cudnn, bc->stream), "cudnnSetStream");
  if (s != GC_OK) {
    be_ctx_destroy(bc);
    return s;
  }
  *out = bc;
  return GC_OK;
}

void be_ctx_destroy(be_ctx *bc) {
  if (!bc) return;
  cudaSetDevice(bc->device);
  if (bc->stream) cudaStreamSynchronize(bc->stream);
  conv_plans_destroy(bc);
  if (bc->cudnn) cudnnDestroy(bc->cudnn);
  if (bc->cublas) cublasDestroy(bc->cublas);
  if (bc->scratch) cudaFree(bc->scratch);
  if (bc->stream) cudaStreamDestroy(bc->stream);
  free(bc);
}

gc_status be_synchronize(be_ctx *bc) {
  GC_CHECK(ctx_enter(bc));
  return cuda_status(cudaStreamSynchronize(bc->stream), "cudaStreamSynchronize");
}

/* ---- memory ---- */

void *be_alloc(be_ctx *bc, size_t bytes) {
  if (ctx_enter(bc) != GC_OK) return NULL;
  void *p = NULL;
  cudaError_t err = cudaMalloc(&p, bytes ? bytes : 256);
  if (err != cudaSuccess) {
    cudaGetLastError();
    gc_set_error(err == cudaErrorMemoryAllocation ? GC_ERR_OUT_OF_MEMORY : GC_ERR_BACKEND,
                 "cannot allocate %zu bytes of device memory: %s", bytes, cudaGetErrorString(err));
    return NULL;
  }
  return p;
}

void be_free(be_ctx *bc, void *p) {
  if (!p) return;
  cudaSetDevice(bc->device);
  cudaFree(p); /* implicitly waits for work that may still use p */
}

/* A pageable host source is staged before cudaMemcpyAsync returns, so the caller may reuse or
 * free `host` at once; the copy stays ordered after the ops already queued. */
gc_status be_upload(be_ctx *bc, void *dst, const void *host, size_t bytes) {
  GC_CHECK(ctx_enter(bc));
  return cuda_status(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, bc->stream),
                     "upload");
}

gc_status be_download(be_ctx *bc, void *host, const void *src, size_t bytes) {
  GC_CHECK(ctx_enter(bc));
  CU_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, bc->stream), "download");
  return cuda_status(cudaStreamSynchronize(bc->stream), "download");
}
