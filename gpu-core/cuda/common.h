/*
 * CUDA backend internals shared by the cuda/ sources: the context (one stream, cuBLAS and cuDNN handles,
 * a stream-ordered scratch buffer), error plumbing and the reduction building blocks.
 *
 * Every op is enqueued on the context's stream and returns without waiting; results reach the
 * host only through be_download / host-scalar outputs, which synchronise. A launch failure is
 * reported by the op that launched it (cudaGetLastError after each launch); a fault inside a
 * kernel surfaces at the next synchronising call, as with any CUDA program.
 *
 * Numerics mirror cpu/: the same formulas, double where the CPU uses double, fp32 where it
 * uses fp32, and the objects are built with --fmad=false so fp32 expressions round like the C
 * code (which is built without contraction). Reductions run in a fixed order (no atomics), so a
 * result does not change from run to run.
 */
#ifndef GPU_CORE_CUDA_COMMON_H
#define GPU_CORE_CUDA_COMMON_H

#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

extern "C" {
#include "../core/backend.h"
}

enum { CONV_PLANS = 64 }; /* cached cuDNN convolution plans per context (see conv2d.cu) */

struct conv_plan; /* conv2d.cu */

struct be_ctx {
  int device;
  int sm_count;
  int allow_tf32;            /* "tf32=1": TF32 tensor cores for fp32 GEMMs and convolutions */
  cudaStream_t stream;       /* every op of this context runs on it, in order */
  cublasHandle_t cublas;
  cudnnHandle_t cudnn;
  void *scratch;             /* per-op temporaries; reused by the next op (stream order) */
  size_t scratch_bytes;
  struct conv_plan *plans;   /* [CONV_PLANS] */
  uint64_t plan_clock;       /* LRU counter of the plan cache */
};

/* ---- errors ---- */

/* GC_OK for cudaSuccess; else an error naming `what` (out of memory mapped to its status). */
gc_status cuda_status(cudaError_t err, const char *what);
gc_status cublas_status(cublasStatus_t st, const char *what);
gc_status cudnn_status(cudnnStatus_t st, const char *what);
/* Checks the last launch (a bad configuration shows here, not at the next sync). */
gc_status launch_status(const char *kernel);

#define CU_CHECK(expr, what)                                                                    \
  do {                                                                                          \
    gc_status cu_s_ = cuda_status((expr), (what));                                              \
    if (cu_s_ != GC_OK) return cu_s_;                                                           \
  } while (0)

#define GC_CHECK(expr)                                                                          \
  do {                                                                                          \
    gc_status gc_s_ = (expr);                                                                   \
    if (gc_s_ != GC_OK) return gc_s_;                                                           \
  } while (0)

/* Makes bc's device current (a no-op with one GPU, needed with several contexts on several). */
gc_status ctx_enter(be_ctx *bc);

/* Scratch of at least `bytes`, valid until the next op of this context; NULL with an error set.
 * Growing frees the old buffer with cudaFree, which waits for work already queued on it. */
void *scratch_get(be_ctx *bc, size_t bytes);

/* ---- launch geometry ---- */

enum { THREADS = 256 };

/* Blocks for a grid-stride loop over n items: enough to fill the GPU, never more than needed. */
static inline unsigned grid_for(const be_ctx *bc, int64_t n, int threads = THREADS) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = (int64_t)bc->sm_count * 32;
  if (blocks > cap) blocks = cap;
  return blocks < 1 ? 1u : (unsigned)blocks;
}

#define GRID_STRIDE(i, n)                                                                       \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                     \
       i += (int64_t)blockDim.x * gridDim.x)

/* ---- block reductions (blockDim.x a multiple of 32, at most 1024) ---- */

/* Sum of v over the block, returned to every thread. Contains __syncthreads: call it from every
 * thread of the block. */
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  __shared__ double total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = (blockDim.x + 31) >> 5;
    v = lane < nwarps ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const double result = total;
  __syncthreads(); /* warp_sums and total may be reused by the next call */
  return result;
}

/* ---- shared reduction kernels (reduce.cu) ---- */

/* out[r] = sum_s x[r*S + s] in double, for R rows of S (one block per row, or one thread per row
 * when rows are short). */
gc_status row_sums(be_ctx *bc, double *out, const float *x, int64_t R, int64_t S);
/* partial[k*C + c] = sum over rows [k*rows_per, (k+1)*rows_per) of x[r*C + c], in double;
 * returns the number of chunks in *nchunks. partial must hold ceil(N / rows_per) * C doubles. */
gc_status col_partials(be_ctx *bc, double *partial, const float *x, int64_t N, int64_t C,
                       int64_t rows_per);
/* The same over R matrices x[R,N,C] at once: partial[(k*R + m)*C + c] for chunk k of matrix m,
 * so col_finish over R*C columns gives out[m*C + c]. partial holds ceil(N / rows_per) * R * C. */
gc_status col_partials_batched(be_ctx *bc, double *partial, const float *x, int64_t R, int64_t N,
                               int64_t C, int64_t rows_per);
/* out[c] (+= when accumulate, else =) sum_k partial[k*C + c], summed over k in order. */
gc_status col_finish(be_ctx *bc, float *out, const double *partial, int64_t nchunks, int64_t C,
                     int accumulate);

#endif /* GPU_CORE_CUDA_COMMON_H */
