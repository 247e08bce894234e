/*
 * A small register-blocked GEMM for products that live in one thread's cache: attention's
 * per-head products (attention.c) and the Winograd convolution's per-position products
 * (winograd.c). Each caller runs it inside its own OpenMP team, one product per thread; a BLAS
 * call at these sizes costs more in overhead than in arithmetic.
 */
#ifndef GPU_CORE_CPU_SMALL_GEMM_H
#define GPU_CORE_CPU_SMALL_GEMM_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

/* One vector of VW floats; a row of the C block is NR = 16 floats (NV vectors). AVX-512 holds a
 * 12x16 block in 12 registers (the per-head products have N = 16 = Dh or N = Tk, so 16 columns
 * waste nothing); AVX2 a 6x16 block in 12. */
#if defined(__AVX512F__)
typedef float vec __attribute__((vector_size(64)));
typedef float vecu __attribute__((vector_size(64), aligned(4), may_alias)); /* unaligned access */
enum { VW = 16, MR = 12 };
static inline vec v_fma(vec a, vec b, vec c) { return (vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
static inline vec v_splat(float a) { return (vec)_mm512_set1_ps(a); }
static inline vec v_max(vec a, vec b) { return (vec)_mm512_max_ps((__m512)a, (__m512)b); }
#else
typedef float vec __attribute__((vector_size(32)));
typedef float vecu __attribute__((vector_size(32), aligned(4), may_alias));
enum { VW = 8, MR = 6 };
static inline vec v_fma(vec a, vec b, vec c) {
#if defined(__AVX__) && defined(__FMA__)
  return (vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
static inline vec v_splat(float a) { return (vec){a, a, a, a, a, a, a, a}; }
#if defined(__AVX__)
static inline vec v_max(vec a, vec b) { return (vec)_mm256_max_ps((__m256)a, (__m256)b); }
#else
static inline vec v_max(vec a, vec b) {
  for (int i = 0; i < VW; i++) a[i] = a[i] > b[i] ? a[i] : b[i];
  return a;
}
#endif
#endif
enum { NR = 16, NV = NR / VW };

/* A wide panel: 32 columns with AVX-512 (a 12x32 block in 24 registers plus two of B: each
 * broadcast of A feeds two FMAs, where the 16-column block loads one A value per FMA); AVX2's
 * 16 registers hold no wider block than NR. */
#if defined(__AVX512F__)
#define NV_WIDE (2 * NV)
#else
#define NV_WIDE NV
#endif
#define NR_WIDE (NV_WIDE * VW)

static inline vec v_load(const float *p) { return *(const vecu *)p; }
static inline void v_store(float *p, vec v) { *(vecu *)p = v; }

/* C[M,nv*VW] = alpha A B (acc = 0) or C[M,nv*VW] += alpha A B (acc = 1) for one panel of nv
 * vectors (NV: 16 columns, NV_WIDE: NR_WIDE), M a multiple of MR. A(m,k) = A[m*sam + k*sak]
 * (strides let the same kernel read A or A^T); B[K,nv*VW] rows at stride ldb; C rows at ldc.
 * Always inlined, so a caller that passes a constant sam (gemm_panel_rows) gets the MR rows'
 * addresses as displacements from one register (a runtime sam costs a register per row, and GCC
 * then spills the loop's own counters: 240 vs 335 GFLOP/s in winograd.c's products at depth 64). */
__attribute__((always_inline)) static inline void gemm_panel(int64_t M, int64_t K, float alpha, const float *A, int64_t sam,
                       int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc, int acc, int nv) {
  const vec va = v_splat(alpha);
  for (int64_t m = 0; m + MR <= M; m += MR) {
    const float *a0 = A + m * sam;
    vec c[MR][NV_WIDE];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int j = 0; j < nv; j++) c[i][j] = (vec){0};
    for (int64_t k = 0; k < K; k++) {
      vec b[NV_WIDE];
#pragma GCC unroll 4
      for (int j = 0; j < nv; j++) b[j] = v_load(B + k * ldb + j * VW);
      const float *a = a0 + k * sak;
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++) {
        const vec x = v_splat(a[i * sam]);
#pragma GCC unroll 4
        for (int j = 0; j < nv; j++) c[i][j] = v_fma(x, b[j], c[i][j]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int j = 0; j < nv; j++) {
        float *cij = C + (m + i) * ldc + j * VW;
        v_store(cij, acc ? v_fma(va, c[i][j], v_load(cij)) : va * c[i][j]);
      }
  }
}

/* gemm_panel with the row strides the CPU kernels use as compile-time constants: 1 (an operand
 * read transposed), attention's head widths and padded key counts, Winograd's channel counts;
 * any other stride at run time. wide: a panel of NR_WIDE columns, else NR. */
static inline void gemm_panel_rows(int64_t M, int64_t K, float alpha, const float *A, int64_t sam,
                                   int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc,
                                   int acc, int wide) {
#define GEMM_PANEL_ROWS(s)                                                                         \
  case s:                                                                                          \
    if (wide) gemm_panel(M, K, alpha, A, s, sak, B, ldb, C, ldc, acc, NV_WIDE);                    \
    else gemm_panel(M, K, alpha, A, s, sak, B, ldb, C, ldc, acc, NV);                              \
    break;
  switch (sam) {
    GEMM_PANEL_ROWS(1)
    GEMM_PANEL_ROWS(16)
    GEMM_PANEL_ROWS(32)
    GEMM_PANEL_ROWS(64)
    GEMM_PANEL_ROWS(96)
    GEMM_PANEL_ROWS(128)
    GEMM_PANEL_ROWS(256)
  default:
    if (wide) gemm_panel(M, K, alpha, A, sam, sak, B, ldb, C, ldc, acc, NV_WIDE);
    else gemm_panel(M, K, alpha, A, sam, sak, B, ldb, C, ldc, acc, NV);
    break;
  }
#undef GEMM_PANEL_ROWS
}

/* C[M,N] (+)= alpha A B for M a multiple of MR and N of NR, B and C rows at stride N: wide
 * panels while a whole one fits, then 16-column ones (Winograd's products; with AVX-512 the wide
 * panels made them 5-11% faster per convolution call). */
static inline void gemm_panels(int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                               int64_t sam, int64_t sak, const float *B, float *C, int acc) {
  int64_t n = 0;
  for (; NR_WIDE > NR && n + NR_WIDE <= N; n += NR_WIDE)
    gemm_panel_rows(M, K, alpha, A, sam, sak, B + n, N, C + n, N, acc, 1);
  for (; n < N; n += NR) gemm_panel_rows(M, K, alpha, A, sam, sak, B + n, N, C + n, N, acc, 0);
}

/* Floats of `tmp` that gemm needs for sizes up to M, K. */
static inline int64_t gemm_tmp_floats(int64_t M, int64_t K) { return K * (NR + MR) + (M + MR) * NR; }

/* C[M,N] = alpha A B (acc = 0) or C[M,N] += alpha A B (acc = 1), A as in gemm_panel, B[K,N] rows
 * at stride ldb. Ragged edges (the last M % MR rows, the last N % 16 columns) run through
 * zero-padded copies in tmp, so the kernel only ever sees full blocks. */
static inline void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t sam,
                 int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc, float *tmp, int acc) {
  const int64_t M6 = M / MR * MR, mt = M - M6;
  float *bt = tmp;           /* [K,16]: a ragged column panel of B */
  float *at = bt + K * NR;   /* [K,MR]: the ragged rows of A, at(m,k) = at[k*MR + m] */
  float *ct = at + K * MR;   /* [M6,16]: C of a ragged column panel */
  float *c6 = ct + M6 * NR;  /* [MR,16]: C of the ragged rows */
  if (mt) {
    for (int64_t k = 0; k < K; k++)
      for (int64_t m = 0; m < MR; m++) at[k * MR + m] = m < mt ? A[(M6 + m) * sam + k * sak] : 0.0f;
  }
  for (int64_t n = 0; n < N; n += NR) {
    const int64_t w = N - n < NR ? N - n : NR;
    const float *bp = B + n;
    int64_t lb = ldb;
    if (w < NR) {
      for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < NR; j++) bt[k * NR + j] = j < w ? B[k * ldb + n + j] : 0.0f;
      bp = bt;
      lb = NR;
    }
    if (w == NR) {
      gemm_panel_rows(M6, K, alpha, A, sam, sak, bp, lb, C + n, ldc, acc, 0);
    } else {
      gemm_panel_rows(M6, K, alpha, A, sam, sak, bp, lb, ct, NR, 0, 0);
      for (int64_t m = 0; m < M6; m++)
        for (int64_t j = 0; j < w; j++) C[m * ldc + n + j] = (acc ? C[m * ldc + n + j] : 0.0f) + ct[m * NR + j];
    }
    if (mt) {
      gemm_panel(MR, K, alpha, at, 1, MR, bp, lb, c6, NR, 0, NV);
      for (int64_t m = 0; m < mt; m++)
        for (int64_t j = 0; j < w; j++)
          C[(M6 + m) * ldc + n + j] = (acc ? C[(M6 + m) * ldc + n + j] : 0.0f) + c6[m * NR + j];
    }
  }
}

#endif
