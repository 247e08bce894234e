/*
 * CPU backend: group norm and layer norm (PyTorch semantics: biased variance,
 * rstd = 1/sqrt(var + eps)). Statistics are accumulated in double with two passes (mean, then
 * centred squares, each a vectorised `omp simd` reduction: 1.4-2.7x less CPU than scalar sums)
 * so a large mean does not cancel the variance. The saved mean/rstd are fp32, and both directions
 * use those saved values. Per element both norms work in float, z = (x - mean) rstd gamma + beta
 * (twice the lanes of double; a few fp32 ulp of error), while their sums stay double.
 *
 * Backward, with xhat = (x - mean) rstd and dxhat = dy gamma over the n normalised elements:
 *   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
 *   dgamma += sum dy xhat, dbeta += sum dy (reduced over everything but the channel).
 * Parameter-gradient reductions run in a fixed order, so results do not depend on thread count.
 * Group norm may fuse SiLU after it: the forward rounds the norm's output to float and applies
 * SiLU to that, and the backward recomputes the same float and takes dy silu'(z) as its upstream
 * gradient: the forward is the two ops' result to the bit, the backward to the rounding of its
 * double sums (the fused loop may vectorise with another lane order).
 */
#include <math.h>
#include <stdlib.h>

#include "../core/backend.h"
#include "vmath.h"

/* Below this many elements a loop runs on one thread. */
#define PAR_MIN 32768

/* ---- group norm ---- */

static gc_status groups_check(int64_t C, int64_t G) {
  if (G <= 0 || C % G != 0)
    return gc_set_error(GC_ERR_SHAPE, "group_norm: %lld channels do not split into %lld groups",
                        (long long)C, (long long)G);
  return GC_OK;
}

// x, y are (B, C, S); mean, rstd are (B, G), optional; gamma, beta are (C), optional.
// Group g of sample b is the contiguous block of C/G channels * S elements. silu: y = silu(norm).
static void group_norm_forward_cf(float *y, float *mean, float *rstd, const float *x,
                                  const float *gamma, const float *beta, int64_t B, int64_t C,
                                  int64_t S, int64_t G, float eps, int silu) {
  int64_t Cg = C / G, n = Cg * S;
#pragma omp parallel for if (B * C * S > PAR_MIN)
  for (int64_t bg = 0; bg < B * G; bg++) {
    const float *xg = x + bg * n;
    float *yg = y + bg * n;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += xg[i];
    double m = n > 0 ? sum / (double)n : 0.0;
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < n; i++) {
      double d = xg[i] - m;
      sq += d * d;
    }
    double var = n > 0 ? sq / (double)n : 0.0;
    double r = 1.0 / sqrt(var + (double)eps);
    const float mf = (float)m, rf = (float)r;
    if (mean) mean[bg] = mf;
    if (rstd) rstd[bg] = rf;
    int64_t c0 = (bg % G) * Cg;
    for (int64_t c = 0; c < Cg; c++) {
      const float a = rf * (gamma ? gamma[c0 + c] : 1.0f), bt = beta ? beta[c0 + c] : 0.0f;
      const float *xc = xg + c * S;
      float *yc = yg + c * S;
      if (silu) {
#pragma omp simd
        for (int64_t s = 0; s < S; s++) yc[s] = vm_siluf(VM_FMA(xc[s] - mf, a, bt));
      } else {
#pragma omp simd
        for (int64_t s = 0; s < S; s++) yc[s] = VM_FMA(xc[s] - mf, a, bt);
      }
    }
  }
}

/* Rows per float block of the channels-last statistics: each block's per-channel sums run in
 * float lanes (16 per AVX-512 register, twice double's), then go into double; 32 shifted terms
 * keep float's error ~32 ulp of the block sum, far under the op table's 1e-5. */
enum { GN_ROW_BLOCK = 32 };

/* Channels-last statistics of one sample x[S,C] in one pass, into mean, rstd [G] and the
 * per-channel float coefficients of the element loops: mc[c] = its group's mean, ac[c] = rstd
 * gamma[c], bc[c] = beta[c]. Each channel's terms are shifted by its first value k_c (so squares
 * do not cancel when |mean| >> std): P_c = sum (x - k_c), Q_c = sum (x - k_c)^2 in double over
 * float blocks; per group, sum (x - m)^2 = sum_c Q_c - 2 (m - k_c) P_c + S (m - k_c)^2.
 * Scratch: dacc 2C doubles, facc 3C floats. */
static void cl_stats(const float *x, int64_t S, int64_t C, int64_t G, float eps,
                     const float *gamma, const float *beta, float *mean, float *rstd, double *dacc,
                     float *facc, float *mc, float *ac, float *bc) {
  const int64_t Cg = C / G, n = Cg * S;
  double *P = dacc, *Q = dacc + C;
  float *k = facc, *fp = k + C, *fq = fp + C;
  for (int64_t c = 0; c < C; c++) {
    P[c] = Q[c] = 0.0;
    k[c] = S > 0 ? x[c] : 0.0f;
  }
  for (int64_t s0 = 0; s0 < S; s0 += GN_ROW_BLOCK) {
    const int64_t s1 = s0 + GN_ROW_BLOCK < S ? s0 + GN_ROW_BLOCK : S;
    for (int64_t c = 0; c < C; c++) fp[c] = fq[c] = 0.0f;
    for (int64_t s = s0; s < s1; s++) {
      const float *xr = x + s * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float d = xr[c] - k[c];
        fp[c] += d;
        fq[c] = VM_FMA(d, d, fq[c]);
      }
    }
    for (int64_t c = 0; c < C; c++) {
      P[c] += fp[c];
      Q[c] += fq[c];
    }
  }
  for (int64_t g = 0; g < G; g++) {
    double sum = 0.0;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) sum += P[c] + (double)S * k[c];
    const double m = n > 0 ? sum / (double)n : 0.0;
    double sq = 0.0;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) {
      const double dm = m - k[c];
      sq += Q[c] - 2.0 * dm * P[c] + (double)S * dm * dm;
    }
    const double var = n > 0 && sq > 0.0 ? sq / (double)n : 0.0;
    const float mf = (float)m, r = (float)(1.0 / sqrt(var + (double)eps));
    if (mean) mean[g] = mf;
    if (rstd) rstd[g] = r;
    for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) {
      mc[c] = mf;
      ac[c] = r * (gamma ? gamma[c] : 1.0f);
      bc[c] = beta ? beta[c] : 0.0f;
    }
  }
}

// x, y are (B, S, C) (channels last); the rest as group_norm_forward_cf.
static gc_status group_norm_forward_cl(float *y, float *mean, float *rstd, const float *x,
                                       const float *gamma, const float *beta, int64_t B, int64_t C,
                                       int64_t S, int64_t G, float eps, int silu) {
  int oom = 0;
#pragma omp parallel for if (B * C * S > PAR_MIN)
  for (int64_t b = 0; b < B; b++) {
    double *acc = malloc((size_t)C * (2 * sizeof(double) + 6 * sizeof(float)));
    if (!acc) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *facc = (float *)(acc + 2 * C), *mc = facc + 3 * C, *ac = mc + C, *bc = ac + C;
    const float *xb = x + b * S * C;
    float *yb = y + b * S * C;
    cl_stats(xb, S, C, G, eps, gamma, beta, mean ? mean + b * G : NULL, rstd ? rstd + b * G : NULL,
             acc, facc, mc, ac, bc);
    for (int64_t s = 0; s < S; s++) {
      const float *xr = xb + s * C;
      float *yr = yb + s * C;
      if (silu) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = vm_siluf(VM_FMA(xr[c] - mc[c], ac[c], bc[c]));
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = VM_FMA(xr[c] - mc[c], ac[c], bc[c]);
      }
    }
    free(acc);
  }
  if (oom) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "group_norm: no memory for %lld sums", (long long)C);
  return GC_OK;
}

gc_status be_group_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t B, int64_t C,
                                int64_t S, int64_t G, float eps, int silu, int cl) {
  (void)bc;
  gc_status st = groups_check(C, G);
  if (st != GC_OK) return st;
  if (cl) return group_norm_forward_cl(y, mean, rstd, x, gamma, beta, B, C, S, G, eps, silu);
  group_norm_forward_cf(y, mean, rstd, x, gamma, beta, B, C, S, G, eps, silu);
  return GC_OK;
}

// Channels-last backward, x, dy, dx (B, S, C): per sample, per-channel sums over the rows of
// dz (x - mean) rstd and dz into sum_dy_xhat, sum_dy (B, C), then dx in a second pass, with dz
// parked in dx under silu as channels-first does.
static gc_status group_norm_backward_cl(float *dx, const float *dy, const float *x,
                                        const float *mean, const float *rstd, const float *gamma,
                                        const float *beta, int64_t B, int64_t C, int64_t S,
                                        int64_t G, int silu, double *sum_dy_xhat, double *sum_dy) {
  const int64_t Cg = C / G, n = Cg * S;
  int oom = 0;
#pragma omp parallel for if (B * C * S > PAR_MIN)
  for (int64_t b = 0; b < B; b++) {
    float *mc = malloc((size_t)C * 7 * sizeof(float)); /* mc, ac, bc, kx, k0, fx, fd per channel */
    if (!mc) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *ac = mc + C, *bz = ac + C, *kx = bz + C, *k0 = kx + C, *fx = k0 + C, *fd = fx + C;
    for (int64_t c = 0; c < C; c++) {
      const int64_t bg = b * G + c / Cg;
      mc[c] = mean[bg];
      ac[c] = rstd[bg] * (gamma ? gamma[c] : 1.0f);
      bz[c] = beta ? beta[c] : 0.0f;
    }
    const float *xb = x + b * S * C, *dyb = dy + b * S * C;
    float *dxb = dx ? dx + b * S * C : NULL;
    double *sdx = sum_dy_xhat + b * C, *sd = sum_dy + b * C;
    for (int64_t c = 0; c < C; c++) sdx[c] = sd[c] = 0.0;
    /* per-channel sums of dz (x - mean) and dz in float blocks of rows, then double (as cl_stats) */
    for (int64_t s0 = 0; s0 < S; s0 += GN_ROW_BLOCK) {
      const int64_t s1 = s0 + GN_ROW_BLOCK < S ? s0 + GN_ROW_BLOCK : S;
      for (int64_t c = 0; c < C; c++) fx[c] = fd[c] = 0.0f;
      for (int64_t s = s0; s < s1; s++) {
        const float *xr = xb + s * C, *dyr = dyb + s * C;
        if (silu && dxb) {
          float *dzr = dxb + s * C;
#pragma omp simd
          for (int64_t c = 0; c < C; c++) {
            const float dz = dyr[c] * vm_silu_gradf(VM_FMA(xr[c] - mc[c], ac[c], bz[c]));
            dzr[c] = dz;
            fx[c] = VM_FMA(dz, xr[c] - mc[c], fx[c]);
            fd[c] += dz;
          }
        } else if (silu) {
#pragma omp simd
          for (int64_t c = 0; c < C; c++) {
            const float dz = dyr[c] * vm_silu_gradf(VM_FMA(xr[c] - mc[c], ac[c], bz[c]));
            fx[c] = VM_FMA(dz, xr[c] - mc[c], fx[c]);
            fd[c] += dz;
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; c++) {
            fx[c] = VM_FMA(dyr[c], xr[c] - mc[c], fx[c]);
            fd[c] += dyr[c];
          }
        }
      }
      for (int64_t c = 0; c < C; c++) {
        sdx[c] += fx[c];
        sd[c] += fd[c];
      }
    }
    for (int64_t g = 0; g < G; g++) {
      const double r = rstd[b * G + g];
      double g_dxhat = 0.0, g_dxhat_xhat = 0.0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) {
        sdx[c] *= r;
        const double gm = gamma ? gamma[c] : 1.0;
        g_dxhat += gm * sd[c];
        g_dxhat_xhat += gm * sdx[c];
      }
      const double mean_dxhat = n > 0 ? g_dxhat / (double)n : 0.0;
      const double mean_dxhat_xhat = n > 0 ? g_dxhat_xhat / (double)n : 0.0;
      for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) {
        ac[c] = (float)(r * (gamma ? gamma[c] : 1.0)); /* now dx's ka */
        kx[c] = (float)(-r * r * mean_dxhat_xhat);
        k0[c] = (float)(-r * mean_dxhat);
      }
    }
    if (dxb)
      for (int64_t s = 0; s < S; s++) {
        const float *xr = xb + s * C;
        float *dxr = dxb + s * C;
        const float *dzr = silu ? dxr : dyb + s * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++)
          dxr[c] = VM_FMA(dzr[c], ac[c], VM_FMA(xr[c] - mc[c], kx[c], k0[c]));
      }
    free(mc);
  }
  if (oom) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "group_norm_backward: no memory for %lld sums", (long long)C);
  return GC_OK;
}

// Channels-first backward: dy, x, dx are (B, C, S); mean, rstd are (B, G) from forward; gamma,
// beta (C) optional. Writes dx (optional) and the sums sum_dy_xhat, sum_dy (B, C). With silu, dy is the gradient of silu(norm(x)): the norm's gradient dz = dy silu'(z) is
// formed in the first pass (and parked in dx, which the second pass then overwrites in place).
static void group_norm_backward_cf(float *dx, const float *dy, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, const float *beta,
                                   int64_t B, int64_t C, int64_t S, int64_t G, int silu,
                                   double *sum_dy_xhat, double *sum_dy) {
  const int64_t Cg = C / G, n = Cg * S;
#pragma omp parallel for if (B * C * S > PAR_MIN)
  for (int64_t bg = 0; bg < B * G; bg++) {
    const float mf = mean[bg], rf = rstd[bg];
    const double r = rf;
    int64_t b = bg / G, c0 = (bg % G) * Cg;
    double g_dxhat = 0.0, g_dxhat_xhat = 0.0; // group sums of dxhat and dxhat * xhat
    for (int64_t c = 0; c < Cg; c++) {
      const float *xc = x + bg * n + c * S;
      const float *dyc = dy + bg * n + c * S;
      double sdx = 0.0, sd = 0.0;
      if (silu) {
        /* z exactly as the forward computed it (same float expression, same saved stats) */
        const float a = rf * (gamma ? gamma[c0 + c] : 1.0f), bz = beta ? beta[c0 + c] : 0.0f;
        if (dx) {
          float *dzc = dx + bg * n + c * S;
#pragma omp simd reduction(+ : sdx, sd)
          for (int64_t s = 0; s < S; s++) {
            const float dz = dyc[s] * vm_silu_gradf(VM_FMA(xc[s] - mf, a, bz));
            dzc[s] = dz;
            sdx += dz * (xc[s] - mf);
            sd += dz;
          }
        } else {
#pragma omp simd reduction(+ : sdx, sd)
          for (int64_t s = 0; s < S; s++) {
            const float dz = dyc[s] * vm_silu_gradf(VM_FMA(xc[s] - mf, a, bz));
            sdx += dz * (xc[s] - mf);
            sd += dz;
          }
        }
      } else {
#pragma omp simd reduction(+ : sdx, sd)
        for (int64_t s = 0; s < S; s++) {
          sdx += dyc[s] * (xc[s] - mf);
          sd += dyc[s];
        }
      }
      sdx *= r;
      sum_dy_xhat[b * C + c0 + c] = sdx;
      sum_dy[b * C + c0 + c] = sd;
      double gm = gamma ? gamma[c0 + c] : 1.0;
      g_dxhat += gm * sd;
      g_dxhat_xhat += gm * sdx;
    }
    if (!dx) continue;
    double mean_dxhat = n > 0 ? g_dxhat / (double)n : 0.0;
    double mean_dxhat_xhat = n > 0 ? g_dxhat_xhat / (double)n : 0.0;
    for (int64_t c = 0; c < Cg; c++) {
      const float *xc = x + bg * n + c * S;
      float *dxc = dx + bg * n + c * S;
      const float *dyc = silu ? dxc : dy + bg * n + c * S; /* with silu, dz parked in dx */
      /* dx = rstd (dz gamma - mean(dxhat) - xhat mean(dxhat xhat)) = dz ka + (x - mean) kx + k0 */
      const float ka = (float)(r * (gamma ? gamma[c0 + c] : 1.0)),
                  kx = (float)(-r * r * mean_dxhat_xhat), k0 = (float)(-r * mean_dxhat);
#pragma omp simd
      for (int64_t s = 0; s < S; s++) dxc[s] = VM_FMA(dyc[s], ka, VM_FMA(xc[s] - mf, kx, k0));
    }
  }
}

// Both layouts: the per-(sample, channel) sums of dz xhat and dz (dz = dy, or dy silu'(z)) that
// dx needs per group, then dgamma, dbeta (C) accumulated (+=) from them over the batch in a
// second, race-free pass. dx written (optional); beta read only with silu.
gc_status be_group_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta,
                                 int64_t B, int64_t C, int64_t S, int64_t G, int silu, int cl) {
  (void)bc;
  gc_status st = groups_check(C, G);
  if (st != GC_OK) return st;
  double *sum_dy_xhat = malloc((size_t)(2 * B * C) * sizeof(double)); // (B, C)
  if (!sum_dy_xhat && B * C > 0)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "group_norm_backward: no memory for %lld sums",
                        (long long)(2 * B * C));
  double *sum_dy = sum_dy_xhat + B * C; // (B, C)
  if (cl)
    st = group_norm_backward_cl(dx, dy, x, mean, rstd, gamma, beta, B, C, S, G, silu, sum_dy_xhat,
                                sum_dy);
  else
    group_norm_backward_cf(dx, dy, x, mean, rstd, gamma, beta, B, C, S, G, silu, sum_dy_xhat,
                           sum_dy);
  if (st == GC_OK && (dgamma || dbeta)) {
    for (int64_t c = 0; c < C; c++) {
      double sg = 0.0, sb = 0.0;
      for (int64_t b = 0; b < B; b++) {
        sg += sum_dy_xhat[b * C + c];
        sb += sum_dy[b * C + c];
      }
      if (dgamma) dgamma[c] = (float)((double)dgamma[c] + sg);
      if (dbeta) dbeta[c] = (float)((double)dbeta[c] + sb);
    }
  }
  free(sum_dy_xhat);
  return st;
}

/* ---- layer norm over the last dim ---- */

// x, y are (N, D); mean, rstd are (N), optional; gamma, beta are (D), optional.
gc_status be_layer_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t N, int64_t D,
                                float eps) {
  (void)bc;
#pragma omp parallel for if (N * D > PAR_MIN)
  for (int64_t row = 0; row < N; row++) {
    const float *xr = x + row * D;
    float *yr = y + row * D;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < D; i++) sum += xr[i];
    double m = D > 0 ? sum / (double)D : 0.0;
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < D; i++) {
      double d = xr[i] - m;
      sq += d * d;
    }
    double var = D > 0 ? sq / (double)D : 0.0;
    double r = 1.0 / sqrt(var + (double)eps);
    const float mf = (float)m, rf = (float)r;
    if (mean) mean[row] = mf;
    if (rstd) rstd[row] = rf;
#pragma omp simd
    for (int64_t i = 0; i < D; i++)
      yr[i] = VM_FMA((xr[i] - mf) * rf, gamma ? gamma[i] : 1.0f, beta ? beta[i] : 0.0f);
  }
  return GC_OK;
}

/* Columns of dgamma/dbeta reduced by one thread: a block of column sums stays in registers/L1
 * while the rows stream past, and each column is owned by exactly one thread. */
#define LN_COLS 32

// dy, x, dx are (N, D); mean, rstd are (N) from forward; gamma (D) optional.
// dx written (optional); dgamma, dbeta (D) accumulate (+=), each optional.
gc_status be_layer_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int64_t N, int64_t D) {
  (void)bc;
  if (dx) {
#pragma omp parallel for if (N * D > PAR_MIN)
    for (int64_t row = 0; row < N; row++) {
      const float *xr = x + row * D, *dyr = dy + row * D;
      float *dxr = dx + row * D;
      const float mf = mean[row], rf = rstd[row];
      const double r = rf;
      double s_dxhat = 0.0, s_dxhat_xm = 0.0; /* sums of dxhat and dxhat (x - mean) */
#pragma omp simd reduction(+ : s_dxhat, s_dxhat_xm)
      for (int64_t i = 0; i < D; i++) {
        const float dxhat = gamma ? dyr[i] * gamma[i] : dyr[i];
        s_dxhat += dxhat;
        s_dxhat_xm += dxhat * (xr[i] - mf);
      }
      const double mean_dxhat = D > 0 ? s_dxhat / (double)D : 0.0;
      const double mean_dxhat_xhat = D > 0 ? s_dxhat_xm * r / (double)D : 0.0;
      /* dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) = dxhat rstd + (x - mean) kx + k0 */
      const float kx = (float)(-r * r * mean_dxhat_xhat), k0 = (float)(-r * mean_dxhat);
#pragma omp simd
      for (int64_t i = 0; i < D; i++) {
        const float dxhat = gamma ? dyr[i] * gamma[i] : dyr[i];
        dxr[i] = VM_FMA(dxhat, rf, VM_FMA(xr[i] - mf, kx, k0));
      }
    }
  }
  if (dgamma || dbeta) {
#pragma omp parallel for if (N * D > PAR_MIN)
    for (int64_t d0 = 0; d0 < D; d0 += LN_COLS) {
      int64_t w = D - d0 < LN_COLS ? D - d0 : LN_COLS;
      double sg[LN_COLS] = {0}, sb[LN_COLS] = {0};
      for (int64_t row = 0; row < N; row++) {
        const float *xr = x + row * D + d0, *dyr = dy + row * D + d0;
        const float mf = mean[row], rf = rstd[row];
#pragma omp simd
        for (int64_t i = 0; i < w; i++) {
          sg[i] += dyr[i] * ((xr[i] - mf) * rf);
          sb[i] += dyr[i];
        }
      }
      for (int64_t i = 0; i < w; i++) {
        if (dgamma) dgamma[d0 + i] = (float)((double)dgamma[d0 + i] + sg[i]);
        if (dbeta) dbeta[d0 + i] = (float)((double)dbeta[d0 + i] + sb[i]);
      }
    }
  }
  return GC_OK;
}
