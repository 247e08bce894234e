/*
 * Fully connected layer on the CPU: each direction is one OpenBLAS sgemm (threaded by OpenBLAS
 * itself) plus an OpenMP loop for the bias.
 */
#include "../core/backend.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#undef I /* OpenBLAS's config header pulls in <complex.h>, whose I would clash with our sizes */

enum { LINEAR_MAX_THREADS = 256 };

/* y[N,O] (=), x[N,I], w[O,I], b[O] optional */
gc_status be_linear_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t I, int64_t O) {
  (void)bc;
  if (b) {
    /* bias first, so the GEMM accumulates onto it (beta = 1) instead of a second pass over y */
#pragma omp parallel for schedule(static) if (N * O > 65536)
    for (int64_t n = 0; n < N; n++) {
      float *row = y + n * O;
      for (int64_t o = 0; o < O; o++) row[o] = b[o];
    }
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)O, (int)I, 1.0f, x, (int)I, w,
              (int)I, b ? 1.0f : 0.0f, y, (int)O);
  return GC_OK;
}

/* db[O] += column sums of dy[N,O], accumulated in double: per-thread partial sums over row
 * blocks (rows are contiguous), combined at the end. */
static gc_status bias_grad(float *db, const float *dy, int64_t N, int64_t O) {
  int nt = (N * O > 65536) ? omp_get_max_threads() : 1;
  if (nt > LINEAR_MAX_THREADS) nt = LINEAR_MAX_THREADS;
  double *part = calloc((size_t)nt * (size_t)O, sizeof(double));
  if (!part) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "linear bias gradient scratch");
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    double *acc = part + (int64_t)omp_get_thread_num() * O;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float *row = dy + n * O;
      for (int64_t o = 0; o < O; o++) acc[o] += row[o];
    }
  }
  for (int64_t o = 0; o < O; o++) {
    double s = 0.0;
    for (int t = 0; t < nt; t++) s += part[(int64_t)t * O + o];
    db[o] += (float)s;
  }
  free(part);
  return GC_OK;
}

/* dx[N,I] (=), dw[O,I] (+=), db[O] (+=), each optional; dy[N,O], x[N,I], w[O,I] */
gc_status be_linear_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t N, int64_t I, int64_t O) {
  (void)bc;
  if (dx) {
    /* dx[N,I] = dy[N,O] w[O,I] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)I, (int)O, 1.0f, dy,
                (int)O, w, (int)I, 0.0f, dx, (int)I);
  }
  if (dw) {
    /* dw[O,I] += dy[N,O]^T x[N,I] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)O, (int)I, (int)N, 1.0f, dy, (int)O,
                x, (int)I, 1.0f, dw, (int)I);
  }
  if (db) return bias_grad(db, dy, N, O);
  return GC_OK;
}
