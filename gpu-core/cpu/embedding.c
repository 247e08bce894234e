/*
 * CPU backend: token + position embedding, sinusoidal timestep embedding, and the MSE loss.
 */
#include <math.h>

#include "../core/backend.h"

/* Below this many elements a loop runs on one thread. */
#define PAR_MIN 32768

/* ---- token + position embedding ---- */

// y is (B, L, D); ids int32 (B, L), each in [0, V); tok is (V, D); pos is (P, D), P >= L, optional
gc_status be_embedding_forward(be_ctx *bc, float *y, const int32_t *ids, const float *tok,
                               const float *pos, int64_t B, int64_t L, int64_t D, int64_t V) {
  (void)bc;
  (void)V;
#pragma omp parallel for if (B * L * D > PAR_MIN)
  for (int64_t bl = 0; bl < B * L; bl++) {
    const float *t = tok + (int64_t)ids[bl] * D;
    float *yr = y + bl * D;
    if (pos) {
      const float *p = pos + (bl % L) * D;
      for (int64_t i = 0; i < D; i++) yr[i] = t[i] + p[i];
    } else {
      for (int64_t i = 0; i < D; i++) yr[i] = t[i];
    }
  }
  return GC_OK;
}

/* Columns of dtok updated by one thread: a repeated id touches the same dtok row from many
 * positions, so threads split the D columns instead of the positions (no races, and the
 * accumulation order is fixed). */
#define EMB_COLS 64

// dy is (B, L, D); ids (B, L); dtok (V, D) += scatter of dy by id; dpos (P, D): rows < L
// += sum over the batch. Both optional.
gc_status be_embedding_backward(be_ctx *bc, float *dtok, float *dpos, const float *dy,
                                const int32_t *ids, int64_t B, int64_t L, int64_t D, int64_t V) {
  (void)bc;
  (void)V;
  if (dtok) {
#pragma omp parallel for if (B * L * D > PAR_MIN)
    for (int64_t d0 = 0; d0 < D; d0 += EMB_COLS) {
      int64_t d1 = d0 + EMB_COLS < D ? d0 + EMB_COLS : D;
      for (int64_t bl = 0; bl < B * L; bl++) {
        float *t = dtok + (int64_t)ids[bl] * D;
        const float *g = dy + bl * D;
        for (int64_t i = d0; i < d1; i++) t[i] += g[i];
      }
    }
  }
  if (dpos) {
#pragma omp parallel for if (B * L * D > PAR_MIN)
    for (int64_t l = 0; l < L; l++) {
      float *p = dpos + l * D;
      for (int64_t i = 0; i < D; i++) {
        double s = p[i];
        for (int64_t b = 0; b < B; b++) s += dy[(b * L + l) * D + i];
        p[i] = (float)s;
      }
    }
  }
  return GC_OK;
}

// ids is (n); bad_index gets the first index whose id is outside [0, V), or -1; bad_value its id.
gc_status be_check_ids(be_ctx *bc, const int32_t *ids, int64_t n, int64_t V, int64_t *bad_index,
                       int32_t *bad_value) {
  (void)bc;
  int64_t bad = -1;
  for (int64_t i = 0; i < n; i++) {
    if (ids[i] < 0 || (int64_t)ids[i] >= V) {
      bad = i;
      break;
    }
  }
  if (bad_index) *bad_index = bad;
  if (bad_value) *bad_value = bad >= 0 ? ids[bad] : 0;
  return GC_OK;
}

/* ---- sinusoidal timestep embedding (diffusers get_timestep_embedding, scale 1) ---- */

/* PyTorch builds this in fp32: exponent_j = fl(fl(-ln max_period) * j) / fl(half - freq_shift),
 * f_j = exp(exponent_j) as an fp32 tensor, args = fl(t * f_j). We round at the same places (the
 * fp32 product and quotient below are exact in double, then rounded once), because with t up to
 * ~1000 one ulp of the argument is ~6e-5, which a sin/cos comparison would see. sin/cos of the
 * rounded argument are evaluated in double. */
static gc_status timestep_check(int64_t half, float freq_shift, float max_period) {
  if (!(max_period > 0.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "timestep_embedding: max_period %g must be > 0",
                        (double)max_period);
  if (half > 0 && (float)((double)half - (double)freq_shift) == 0.0f)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "timestep_embedding: freq_shift %g equals half the width %lld",
                        (double)freq_shift, (long long)half);
  return GC_OK;
}

static inline float timestep_freq(int64_t j, int64_t half, float freq_shift, float max_period) {
  float neg_log = (float)-log((double)max_period);
  float denom = (float)((double)half - (double)freq_shift);
  float exponent = (float)((double)neg_log * (double)(float)j);
  exponent = (float)((double)exponent / (double)denom);
  return (float)exp((double)exponent);
}

// t is (B); y is (B, D): [sin(t f) | cos(t f)], halves swapped when flip_sin_to_cos,
// odd D gets a zero last column
gc_status be_timestep_embedding_forward(be_ctx *bc, float *y, const float *t, int64_t B,
                                        int64_t D, int flip_sin_to_cos, float freq_shift,
                                        float max_period) {
  (void)bc;
  int64_t half = D / 2;
  gc_status st = timestep_check(half, freq_shift, max_period);
  if (st != GC_OK) return st;
#pragma omp parallel for if (B * D > PAR_MIN / 8)
  for (int64_t b = 0; b < B; b++) {
    float *yr = y + b * D;
    float *ys = flip_sin_to_cos ? yr + half : yr; // sin half
    float *yc = flip_sin_to_cos ? yr : yr + half; // cos half
    for (int64_t j = 0; j < half; j++) {
      float arg = (float)((double)t[b] * timestep_freq(j, half, freq_shift, max_period));
      ys[j] = (float)sin((double)arg);
      yc[j] = (float)cos((double)arg);
    }
    if (D % 2) yr[D - 1] = 0.0f;
  }
  return GC_OK;
}

// dy is (B, D), t is (B); dt (B) written: dt = sum_j f_j (dy_sin_j cos(t f_j) - dy_cos_j sin(t f_j))
gc_status be_timestep_embedding_backward(be_ctx *bc, float *dt, const float *dy, const float *t,
                                         int64_t B, int64_t D, int flip_sin_to_cos,
                                         float freq_shift, float max_period) {
  (void)bc;
  int64_t half = D / 2;
  gc_status st = timestep_check(half, freq_shift, max_period);
  if (st != GC_OK) return st;
#pragma omp parallel for if (B * D > PAR_MIN / 8)
  for (int64_t b = 0; b < B; b++) {
    const float *dyr = dy + b * D;
    const float *ds = flip_sin_to_cos ? dyr + half : dyr;
    const float *dc = flip_sin_to_cos ? dyr : dyr + half;
    double sum = 0.0;
    for (int64_t j = 0; j < half; j++) {
      double f = timestep_freq(j, half, freq_shift, max_period);
      double arg = (float)((double)t[b] * f);
      sum += f * ((double)ds[j] * cos(arg) - (double)dc[j] * sin(arg));
    }
    dt[b] = (float)sum;
  }
  return GC_OK;
}

/* ---- weighted mean squared error ---- */

// a, b are (B, M); weights (B) optional (all 1); loss (1) = (1/B) sum_b w_b mean_i (a - b)^2
gc_status be_mse_forward(be_ctx *bc, float *loss, const float *a, const float *b,
                         const float *weights, int64_t B, int64_t M) {
  (void)bc;
  double total = 0.0;
#pragma omp parallel for collapse(2) reduction(+ : total) if (B * M > PAR_MIN)
  for (int64_t r = 0; r < B; r++) {
    for (int64_t i = 0; i < M; i++) {
      double d = (double)a[r * M + i] - (double)b[r * M + i];
      total += (weights ? (double)weights[r] : 1.0) * d * d;
    }
  }
  *loss = B > 0 && M > 0 ? (float)(total / ((double)B * (double)M)) : 0.0f;
  return GC_OK;
}

// da, db (B, M) written, each optional: da = dloss 2 w_b (a - b) / (B M), db = -da
gc_status be_mse_backward(be_ctx *bc, float *da, float *db, float dloss, const float *a,
                          const float *b, const float *weights, int64_t B, int64_t M) {
  (void)bc;
  if (!da && !db) return GC_OK;
  double scale = 2.0 * (double)dloss / ((double)B * (double)M);
#pragma omp parallel for if (B * M > PAR_MIN)
  for (int64_t r = 0; r < B; r++) {
    double c = scale * (weights ? (double)weights[r] : 1.0);
    for (int64_t i = 0; i < M; i++) {
      int64_t k = r * M + i;
      double g = c * ((double)a[k] - (double)b[k]);
      if (da) da[k] = (float)g;
      if (db) db[k] = (float)-g;
    }
  }
  return GC_OK;
}
