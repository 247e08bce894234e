/*
 * Fully connected layer on the CPU. y = x w^T and dx = dy w go to oneDNN's matmul
 * (matmul_dnnl.c: 1.3-2x OpenBLAS's rate at these shapes, 25x at LoRA's rank 4). dw and db run
 * over blocks of rows per thread: dw by oneDNN's matmul on that thread (dy read transposed; the
 * UNet's 8192x256->64 0.95-1.05 ms against OpenBLAS's 1.35-1.38, 8192x64->64 0.27-0.30 vs
 * 0.34-0.36), db summed in double; everything in a build without oneDNN, or for a shape oneDNN
 * declines, runs on OpenBLAS sgemm.
 *
 * Threading as in conv2d.c: when OpenBLAS is single-threaded the rows are split into one range
 * per OpenMP thread, each thread calling sgemm on its range (its dw and db go to private
 * buffers summed at the end); when OpenBLAS is threaded everything runs on the calling thread
 * and OpenBLAS parallelises each call.
 */
#include "../core/backend.h"
#include "blas_team.h"
#include "scratch.h"
#include "matmul_dnnl.h"

#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#undef I /* OpenBLAS's config header pulls in <complex.h>, whose I would clash with our sizes */

enum { LINEAR_MAX_TEAM = 256, LINEAR_MIN_ROWS = 64 /* rows per thread worth a BLAS call */ };

/* Rows per sgemm call. With a small weight (the 64..256-wide layers of a small UNet) OpenBLAS
 * runs a tall-skinny product much faster in blocks whose rows of x and y stay in L2 (measured
 * ~1.5x at 32768x64x64); a large weight would be re-packed per block, so it gets one call. */
static int64_t block_rows(int64_t I, int64_t O) {
  const int64_t widest = I > O ? I : O;
  return widest > 256 ? INT64_MAX : 65536 / (widest > 0 ? widest : 1);
}

/* Threads for N rows: at most one per LINEAR_MIN_ROWS rows. */
static int linear_team(int64_t N) {
  int64_t team = blas_team();
  if (team > N / LINEAR_MIN_ROWS) team = N / LINEAR_MIN_ROWS;
  if (team > LINEAR_MAX_TEAM) team = LINEAR_MAX_TEAM;
  return team < 1 ? 1 : (int)team;
}

/* Rows [*r0, *r1) of N for thread t of team (blocks of equal size, multiples of 8 rows). */
static void row_block(int64_t N, int team, int t, int64_t *r0, int64_t *r1) {
  int64_t per = (N + team - 1) / team;
  per = (per + 7) / 8 * 8;
  *r0 = t * per < N ? t * per : N;
  *r1 = *r0 + per < N ? *r0 + per : N;
}

static gc_status check_blas_sizes(int64_t N, int64_t I, int64_t O) {
  if (N > INT_MAX || I > INT_MAX || O > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "linear sizes exceed the BLAS int range");
  return GC_OK;
}

/* oneDNN for a product unless a size is 0 (its descriptors refuse empty dims); its answer, or
 * GC_ERR_UNSUPPORTED to fall back to OpenBLAS. */
static int dnnl_takes(int64_t N, int64_t I, int64_t O) { return N > 0 && I > 0 && O > 0; }

static gc_status blas_linear_forward(float *y, const float *x, const float *w, const float *b,
                                     int64_t N, int64_t I, int64_t O, int accumulate);
static gc_status blas_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                      const float *x, const float *w, int64_t N, int64_t I,
                                      int64_t O, int accumulate);

/* y[N,O] (= or += with accumulate), x[N,I], w[O,I], b[O] optional */
gc_status be_linear_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t I, int64_t O, int accumulate) {
  (void)bc;
  if (dnnl_takes(N, I, O)) {
    gc_status st = dnnl_linear_forward(y, x, w, b, N, I, O, accumulate);
    if (st != GC_ERR_UNSUPPORTED) return st;
  }
  return blas_linear_forward(y, x, w, b, N, I, O, accumulate);
}

/* dx[N,I] (= or += with accumulate), dw[O,I] (+=), db[O] (+=), each optional; dy[N,O], x[N,I],
 * w[O,I] */
gc_status be_linear_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t N, int64_t I, int64_t O,
                             int accumulate) {
  (void)bc;
  if (dx && dnnl_takes(N, I, O)) {
    gc_status st = dnnl_linear_backward_data(dx, dy, w, N, I, O, accumulate);
    if (st == GC_OK) dx = NULL; /* done; dw and db below */
    else if (st != GC_ERR_UNSUPPORTED) return st;
  }
  return blas_linear_backward(dx, dw, db, dy, x, w, N, I, O, accumulate);
}

static gc_status blas_linear_forward(float *y, const float *x, const float *w, const float *b,
                                     int64_t N, int64_t I, int64_t O, int accumulate) {
  gc_status st = check_blas_sizes(N, I, O);
  if (st != GC_OK) return st;
  const int team = linear_team(N);

#pragma omp parallel num_threads(team)
  {
    int64_t r0, r1;
    row_block(N, team, omp_get_thread_num(), &r0, &r1);
    const int64_t step = block_rows(I, O);
    for (int64_t s0 = r0, rows; s0 < r1; s0 += rows) {
      rows = r1 - s0 < step ? r1 - s0 : step;
      float *yb = y + s0 * O;
      if (b) {
        /* bias first, so the GEMM accumulates onto it (beta = 1) instead of a second pass */
        for (int64_t n = 0; n < rows; n++) {
          float *yr = yb + n * O;
          if (accumulate) {
            for (int64_t o = 0; o < O; o++) yr[o] += b[o];
          } else {
            memcpy(yr, b, (size_t)O * sizeof(float));
          }
        }
      }
      /* y[s0:s0+rows] = x[s0:s0+rows] w^T (+ y) */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)O, (int)I, 1.0f,
                  x + s0 * I, (int)I, w, (int)I, b || accumulate ? 1.0f : 0.0f, yb, (int)O);
    }
  }
  return GC_OK;
}

static gc_status blas_linear_backward(float *dx, float *dw, float *db, const float *dy,
                                      const float *x, const float *w, int64_t N, int64_t I,
                                      int64_t O, int accumulate) {
  if (!dx && !dw && !db) return GC_OK;
  gc_status st = check_blas_sizes(N, I, O);
  if (st != GC_OK) return st;
  const int team = linear_team(N);
  /* per thread: column sums of dy [O] in double; for threads other than the first a private
   * dw [O,I] (the first accumulates straight into dw) */
  const size_t dbp_bytes = db ? (size_t)O * sizeof(double) : 0;
  const size_t dwp_bytes = dw && team > 1 ? (size_t)(O * I) * sizeof(float) : 0;
  double *dbs[LINEAR_MAX_TEAM] = {0};
  float *dws[LINEAR_MAX_TEAM] = {0};
  int oom = 0;

#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num();
    int64_t r0, r1;
    row_block(N, team, t, &r0, &r1);
    char *scratch = dbp_bytes + dwp_bytes ? cpu_scratch(dbp_bytes + dwp_bytes) : NULL;
    if (dbp_bytes + dwp_bytes && !scratch) {
#pragma omp atomic write
      oom = 1;
    } else {
      const float *dyb = dy + r0 * O;
      const int64_t rows = r1 - r0, step = block_rows(I, O);
      float *dwt = dw; /* thread 0 accumulates straight into dw */
      if (dw && t > 0) {
        dwt = (float *)(scratch + dbp_bytes);
        memset(dwt, 0, dwp_bytes);
        dws[t] = dwt;
      }
      for (int64_t s0 = r0, m; s0 < r1; s0 += m) {
        m = r1 - s0 < step ? r1 - s0 : step;
        /* dx[s0:s0+m] (+)= dy[s0:s0+m] w */
        if (dx)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)I, (int)O, 1.0f,
                      dy + s0 * O, (int)O, w, (int)I, accumulate ? 1.0f : 0.0f, dx + s0 * I,
                      (int)I);
        /* dw (+)= dy[s0:s0+m]^T x[s0:s0+m]: oneDNN's matmul on this thread, else OpenBLAS */
        if (dw && dnnl_linear_backward_weights(dwt, dy + s0 * O, x + s0 * I, m, I, O) != GC_OK)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)O, (int)I, (int)m, 1.0f,
                      dy + s0 * O, (int)O, x + s0 * I, (int)I, 1.0f, dwt, (int)I);
      }
      if (db) {
        double *acc = (double *)scratch;
        for (int64_t o = 0; o < O; o++) acc[o] = 0.0;
        for (int64_t n = 0; n < rows; n++) {
          const float *row = dyb + n * O;
          for (int64_t o = 0; o < O; o++) acc[o] += row[o];
        }
        dbs[t] = acc;
      }
    }
#pragma omp barrier
    /* sum the private parts, each thread its share of the outputs */
    if (db) {
#pragma omp for schedule(static)
      for (int64_t o = 0; o < O; o++) {
        double s = 0.0;
        for (int u = 0; u < team; u++)
          if (dbs[u]) s += dbs[u][o];
        db[o] += (float)s;
      }
    }
    if (dwp_bytes) {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < O * I; i++) {
        float s = 0.0f;
        for (int u = 1; u < team; u++)
          if (dws[u]) s += dws[u][i];
        dw[i] += s;
      }
    }
  }
  if (oom) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "linear backward scratch");
  return GC_OK;
}
