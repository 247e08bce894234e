/*
 * The op entry points of the ABI: resolve handles, check dtypes and shapes with messages that
 * name the argument and show the shapes, then call the backend kernel with raw pointers.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- argument plumbing ----------------------------------------------------------------- */

#define OP_BEGIN(name)                                                                         \
  gc_begin_op("gc_" name);                                                                     \
  gc_ctx *c = gc_get_ctx(ctx);                                                                 \
  if (!c) return GC_ERR_HANDLE

/* Required f32 tensor argument. */
#define ARG(var)                                                                               \
  gc_tensor *var##_t = gc_get_tensor(c, var, #var);                                            \
  if (!var##_t) return GC_ERR_HANDLE;                                                          \
  if (var##_t->dtype != GC_F32) return gc_set_error(GC_ERR_INVALID_ARGUMENT, #var " must be f32")

/* Optional f32 tensor argument (handle 0 = absent). */
#define OPT(var)                                                                               \
  gc_tensor *var##_t = NULL;                                                                   \
  if (var) {                                                                                   \
    var##_t = gc_get_tensor(c, var, #var);                                                     \
    if (!var##_t) return GC_ERR_HANDLE;                                                        \
    if (var##_t->dtype != GC_F32)                                                              \
      return gc_set_error(GC_ERR_INVALID_ARGUMENT, #var " must be f32");                       \
  }

#define F(var) ((float *)(var##_t ? var##_t->data : NULL))
#define CHECK(expr)                                                                            \
  do {                                                                                         \
    gc_status check_s_ = (expr);                                                               \
    if (check_s_ != GC_OK) return check_s_;                                                    \
  } while (0)

static void shape_str(const gc_tensor *t, char *buf, size_t n) {
  size_t used = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, i ? ",%lld" : "%lld", (long long)t->dims[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
}

/* t must have ndim dims; `layout` names them in the message, e.g. "[B,C,H,W]". */
static gc_status want_ndim(const gc_tensor *t, const char *name, int ndim, const char *layout) {
  if (t->ndim == ndim) return GC_OK;
  char s[160];
  shape_str(t, s, sizeof s);
  return gc_set_error(GC_ERR_SHAPE, "%s must be %d-D %s, got %s", name, ndim, layout, s);
}

/* t must have exactly the given dims. */
static gc_status want_shape(const gc_tensor *t, const char *name, int ndim, const int64_t *dims) {
  int ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = t->dims[i] == dims[i];
  if (ok) return GC_OK;
  char got[160], want[160];
  shape_str(t, got, sizeof got);
  gc_tensor w = {.ndim = ndim};
  memcpy(w.dims, dims, (size_t)ndim * sizeof(int64_t));
  shape_str(&w, want, sizeof want);
  return gc_set_error(GC_ERR_SHAPE, "%s must have shape %s, got %s", name, want, got);
}

static gc_status want_same(const gc_tensor *t, const char *name, const gc_tensor *ref,
                           const char *ref_name) {
  int ok = t->ndim == ref->ndim;
  for (int i = 0; ok && i < t->ndim; i++) ok = t->dims[i] == ref->dims[i];
  if (ok) return GC_OK;
  char a[160], b[160];
  shape_str(t, a, sizeof a);
  shape_str(ref, b, sizeof b);
  return gc_set_error(GC_ERR_SHAPE, "%s %s must match %s %s", name, a, ref_name, b);
}

static gc_status want_numel(const gc_tensor *t, const char *name, int64_t n) {
  if (t->numel == n) return GC_OK;
  char s[160];
  shape_str(t, s, sizeof s);
  return gc_set_error(GC_ERR_SHAPE, "%s %s must have %lld elements", name, s, (long long)n);
}

#define WANT_SAME_OPT(t, ref)                                                                  \
  if (t##_t) CHECK(want_same(t##_t, #t, ref##_t, #ref))

static gc_status want_finite(float v, const char *name) {
  if (isfinite(v)) return GC_OK;
  return gc_set_error(GC_ERR_INVALID_ARGUMENT, "%s must be finite, got %g", name, (double)v);
}

/* Product of dims [from, to). */
static int64_t dims_prod(const gc_tensor *t, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= t->dims[i];
  return p;
}

/* ---- elementwise and data movement ----------------------------------------------------- */

gc_status gc_fill(gc_handle ctx, gc_handle y, float value) {
  OP_BEGIN("fill");
  ARG(y);
  return be_fill(c->be, F(y), y_t->numel, value);
}

gc_status gc_copy(gc_handle ctx, gc_handle y, gc_handle x) {
  OP_BEGIN("copy");
  ARG(y);
  ARG(x);
  CHECK(want_numel(y_t, "y", x_t->numel));
  return be_copy(c->be, F(y), F(x), x_t->numel);
}

gc_status gc_axpby(gc_handle ctx, gc_handle y, float alpha, gc_handle x, float beta) {
  OP_BEGIN("axpby");
  ARG(y);
  ARG(x);
  CHECK(want_numel(y_t, "y", x_t->numel));
  CHECK(want_finite(alpha, "alpha"));
  CHECK(want_finite(beta, "beta"));
  return be_axpby(c->be, F(y), alpha, F(x), beta, x_t->numel);
}

/* b broadcasts onto a when b's dims are a leading prefix of a's, or a's dims with one run of
 * them replaced by 1s; returns the split a[R,S,C], b[R,C]. */
static gc_status add_split(const gc_tensor *a, const gc_tensor *b, int64_t *R, int64_t *S,
                           int64_t *C) {
  int ok = b->ndim <= a->ndim;
  int lead = 0, tail = b->ndim; /* b's dims [0, lead) and [tail, ndim) equal a's */
  while (ok && lead < b->ndim && a->dims[lead] == b->dims[lead]) lead++;
  if (ok && b->ndim == a->ndim && lead < b->ndim) {
    tail = lead;
    while (tail < b->ndim && b->dims[tail] == 1) tail++;
    for (int i = tail; ok && i < b->ndim; i++) ok = a->dims[i] == b->dims[i];
  } else if (ok) {
    ok = lead == b->ndim;
  }
  if (!ok) {
    char sa[160], sb[160];
    shape_str(a, sa, sizeof sa);
    shape_str(b, sb, sizeof sb);
    return gc_set_error(GC_ERR_SHAPE,
                        "b %s must equal a %s, be a leading prefix of its dims, or have its dims "
                        "with one run of 1s (broadcast)",
                        sb, sa);
  }
  *R = dims_prod(a, 0, lead);
  *C = b->ndim == a->ndim ? dims_prod(a, tail, a->ndim) : 1;
  *S = *R * *C != 0 ? a->numel / (*R * *C) : 0; /* an empty b: nothing to add */
  return GC_OK;
}

gc_status gc_add_forward(gc_handle ctx, gc_handle y, gc_handle a, gc_handle b) {
  OP_BEGIN("add_forward");
  ARG(y);
  ARG(a);
  ARG(b);
  CHECK(want_same(y_t, "y", a_t, "a"));
  int64_t R = 0, S = 0, C = 0;
  CHECK(add_split(a_t, b_t, &R, &S, &C));
  return be_add_forward(c->be, F(y), F(a), F(b), R, S, C);
}

gc_status gc_add_backward(gc_handle ctx, gc_handle da, gc_handle db, gc_handle dy) {
  OP_BEGIN("add_backward");
  OPT(da);
  OPT(db);
  ARG(dy);
  WANT_SAME_OPT(da, dy);
  int64_t R = dy_t->numel, S = 1, C = 1;
  if (db_t) CHECK(add_split(dy_t, db_t, &R, &S, &C));
  return be_add_backward(c->be, F(da), F(db), F(dy), R, S, C);
}

static gc_status transpose_check(const gc_tensor *y, const gc_tensor *x, int64_t *B, int64_t *M,
                                 int64_t *N) {
  if (x->ndim < 2) return want_ndim(x, "x", 3, "[B,M,N]");
  *M = x->dims[x->ndim - 2];
  *N = x->dims[x->ndim - 1];
  *B = x->numel / (*M * *N);
  int64_t want[GC_MAX_DIMS];
  memcpy(want, x->dims, sizeof want);
  want[x->ndim - 2] = *N;
  want[x->ndim - 1] = *M;
  return want_shape(y, "y", x->ndim, want);
}

gc_status gc_transpose_forward(gc_handle ctx, gc_handle y, gc_handle x) {
  OP_BEGIN("transpose_forward");
  ARG(y);
  ARG(x);
  int64_t B = 0, M = 0, N = 0;
  CHECK(transpose_check(y_t, x_t, &B, &M, &N));
  return be_transpose(c->be, F(y), F(x), B, M, N);
}

gc_status gc_transpose_backward(gc_handle ctx, gc_handle dx, gc_handle dy) {
  OP_BEGIN("transpose_backward");
  ARG(dx);
  ARG(dy);
  int64_t B = 0, M = 0, N = 0;
  CHECK(transpose_check(dx_t, dy_t, &B, &M, &N));
  return be_transpose(c->be, F(dx), F(dy), B, M, N);
}

static gc_status concat_check(const gc_tensor *y, const gc_tensor *a, const gc_tensor *b,
                              int64_t *B, int64_t *Ca, int64_t *Cb, int64_t *S) {
  if (a->ndim < 2) return want_ndim(a, "a", 4, "[B,C,H,W]");
  if (b->ndim != a->ndim) return want_ndim(b, "b", a->ndim, "like a");
  int64_t want[GC_MAX_DIMS];
  memcpy(want, a->dims, sizeof want);
  want[1] = b->dims[1];
  CHECK(want_shape(b, "b", a->ndim, want));
  want[1] = a->dims[1] + b->dims[1];
  CHECK(want_shape(y, "y", a->ndim, want));
  *B = a->dims[0];
  *Ca = a->dims[1];
  *Cb = b->dims[1];
  *S = dims_prod(a, 2, a->ndim);
  return GC_OK;
}

gc_status gc_concat_forward(gc_handle ctx, gc_handle y, gc_handle a, gc_handle b) {
  OP_BEGIN("concat_forward");
  ARG(y);
  ARG(a);
  ARG(b);
  int64_t B = 0, Ca = 0, Cb = 0, S = 0;
  CHECK(concat_check(y_t, a_t, b_t, &B, &Ca, &Cb, &S));
  return be_concat_forward(c->be, F(y), F(a), F(b), B, Ca, Cb, S);
}

gc_status gc_concat_backward(gc_handle ctx, gc_handle da, gc_handle db, gc_handle dy) {
  OP_BEGIN("concat_backward");
  ARG(da);
  ARG(db);
  ARG(dy);
  int64_t B = 0, Ca = 0, Cb = 0, S = 0;
  CHECK(concat_check(dy_t, da_t, db_t, &B, &Ca, &Cb, &S));
  return be_concat_backward(c->be, F(da), F(db), F(dy), B, Ca, Cb, S);
}

/* x[B,C,H,W] (cl: [B,H,W,C]) as the kernel's x[P,H,W,Ci] */
static gc_status upsample_check(const gc_tensor *y, const gc_tensor *x, int cl, int64_t *P,
                                int64_t *H, int64_t *W, int64_t *Ci) {
  CHECK(want_ndim(x, "x", 4, cl ? "[B,H,W,C]" : "[B,C,H,W]"));
  const int h = cl ? 1 : 2;
  int64_t want[4] = {x->dims[0], x->dims[1], x->dims[2], x->dims[3]};
  want[h] *= 2;
  want[h + 1] *= 2;
  CHECK(want_shape(y, "y", 4, want));
  *P = cl ? x->dims[0] : x->dims[0] * x->dims[1];
  *H = x->dims[h];
  *W = x->dims[h + 1];
  *Ci = cl ? x->dims[3] : 1;
  return GC_OK;
}

gc_status gc_upsample2x_forward(gc_handle ctx, gc_handle y, gc_handle x, int32_t channels_last) {
  OP_BEGIN("upsample2x_forward");
  ARG(y);
  ARG(x);
  int64_t P = 0, H = 0, W = 0, C = 0;
  CHECK(upsample_check(y_t, x_t, channels_last != 0, &P, &H, &W, &C));
  return be_upsample2x_forward(c->be, F(y), F(x), P, H, W, C);
}

gc_status gc_upsample2x_backward(gc_handle ctx, gc_handle dx, gc_handle dy, int32_t channels_last) {
  OP_BEGIN("upsample2x_backward");
  ARG(dx);
  ARG(dy);
  int64_t P = 0, H = 0, W = 0, C = 0;
  CHECK(upsample_check(dy_t, dx_t, channels_last != 0, &P, &H, &W, &C));
  return be_upsample2x_backward(c->be, F(dx), F(dy), P, H, W, C);
}

/* ---- layers ------------------------------------------------------------------------------ */

typedef struct conv_dims {
  int64_t B, C, H, W, O, K, Ho, Wo;
} conv_dims;

static gc_status conv_check(const gc_tensor *y, const gc_tensor *x, const gc_tensor *w,
                            const gc_tensor *b, int32_t stride, int32_t pad, int cl, conv_dims *d) {
  CHECK(want_ndim(x, "x", 4, cl ? "[B,H,W,C]" : "[B,C,H,W]"));
  const int ci = cl ? 3 : 1, hi = cl ? 1 : 2; /* where C and H are in x */
  CHECK(want_ndim(w, "w", 4, "[O,C,K,K]"));
  if (stride < 1) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "stride must be >= 1, got %d", stride);
  if (pad < 0) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "pad must be >= 0, got %d", pad);
  if (w->dims[2] != w->dims[3])
    return gc_set_error(GC_ERR_SHAPE, "w must have a square kernel, got %lldx%lld",
                        (long long)w->dims[2], (long long)w->dims[3]);
  if (w->dims[1] != x->dims[ci])
    return gc_set_error(GC_ERR_SHAPE, "w has %lld input channels but x has %lld",
                        (long long)w->dims[1], (long long)x->dims[ci]);
  *d = (conv_dims){.B = x->dims[0], .C = x->dims[ci], .H = x->dims[hi], .W = x->dims[hi + 1],
                   .O = w->dims[0], .K = w->dims[2]};
  if (d->H + 2 * pad < d->K || d->W + 2 * pad < d->K)
    return gc_set_error(GC_ERR_SHAPE, "kernel %lld is larger than the padded input %lldx%lld",
                        (long long)d->K, (long long)(d->H + 2 * pad), (long long)(d->W + 2 * pad));
  d->Ho = (d->H + 2 * pad - d->K) / stride + 1;
  d->Wo = (d->W + 2 * pad - d->K) / stride + 1;
  int64_t ys[4] = {d->B, d->O, d->Ho, d->Wo}, ysl[4] = {d->B, d->Ho, d->Wo, d->O};
  CHECK(want_shape(y, "y", 4, cl ? ysl : ys));
  if (b) CHECK(want_shape(b, "b", 1, &d->O));
  return GC_OK;
}

gc_status gc_conv2d_forward(gc_handle ctx, gc_handle y, gc_handle x, gc_handle w, gc_handle b,
                            int32_t stride, int32_t pad, int32_t channels_last) {
  OP_BEGIN("conv2d_forward");
  ARG(y);
  ARG(x);
  ARG(w);
  OPT(b);
  conv_dims d;
  CHECK(conv_check(y_t, x_t, w_t, b_t, stride, pad, channels_last != 0, &d));
  return be_conv2d_forward(c->be, F(y), F(x), F(w), F(b), d.B, d.C, d.H, d.W, d.O, d.K, stride,
                           pad, d.Ho, d.Wo, channels_last != 0);
}

gc_status gc_conv2d_backward(gc_handle ctx, gc_handle dx, gc_handle dw, gc_handle db,
                             gc_handle dy, gc_handle x, gc_handle w, int32_t stride, int32_t pad,
                             int32_t channels_last) {
  OP_BEGIN("conv2d_backward");
  OPT(dx);
  OPT(dw);
  OPT(db);
  ARG(dy);
  ARG(x);
  ARG(w);
  conv_dims d;
  CHECK(conv_check(dy_t, x_t, w_t, db_t, stride, pad, channels_last != 0, &d));
  WANT_SAME_OPT(dx, x);
  WANT_SAME_OPT(dw, w);
  return be_conv2d_backward(c->be, F(dx), F(dw), F(db), F(dy), F(x), F(w), d.B, d.C, d.H, d.W,
                            d.O, d.K, stride, pad, d.Ho, d.Wo, channels_last != 0);
}

/* x[N..,I], w[O,I], y[N..,O] */
static gc_status linear_check(const gc_tensor *y, const gc_tensor *x, const gc_tensor *w,
                              const gc_tensor *b, int64_t *N, int64_t *I, int64_t *O) {
  CHECK(want_ndim(w, "w", 2, "[O,I]"));
  *O = w->dims[0];
  *I = w->dims[1];
  if (x->dims[x->ndim - 1] != *I)
    return gc_set_error(GC_ERR_SHAPE, "x's last dim is %lld but w expects %lld inputs",
                        (long long)x->dims[x->ndim - 1], (long long)*I);
  *N = x->numel / *I;
  int64_t want[GC_MAX_DIMS];
  memcpy(want, x->dims, sizeof want);
  want[x->ndim - 1] = *O;
  CHECK(want_shape(y, "y", x->ndim, want));
  if (b) CHECK(want_shape(b, "b", 1, O));
  return GC_OK;
}

gc_status gc_linear_forward(gc_handle ctx, gc_handle y, gc_handle x, gc_handle w, gc_handle b,
                            int32_t accumulate) {
  OP_BEGIN("linear_forward");
  ARG(y);
  ARG(x);
  ARG(w);
  OPT(b);
  int64_t N = 0, I = 0, O = 0;
  CHECK(linear_check(y_t, x_t, w_t, b_t, &N, &I, &O));
  return be_linear_forward(c->be, F(y), F(x), F(w), F(b), N, I, O, accumulate != 0);
}

gc_status gc_linear_backward(gc_handle ctx, gc_handle dx, gc_handle dw, gc_handle db,
                             gc_handle dy, gc_handle x, gc_handle w, int32_t accumulate) {
  OP_BEGIN("linear_backward");
  OPT(dx);
  OPT(dw);
  OPT(db);
  ARG(dy);
  ARG(x);
  ARG(w);
  int64_t N = 0, I = 0, O = 0;
  CHECK(linear_check(dy_t, x_t, w_t, db_t, &N, &I, &O));
  WANT_SAME_OPT(dx, x);
  WANT_SAME_OPT(dw, w);
  return be_linear_backward(c->be, F(dx), F(dw), F(db), F(dy), F(x), F(w), N, I, O,
                            accumulate != 0);
}

/* x[B,C,S...] (cl: [B,S...,C]): mean/rstd [B,G], gamma/beta [C] */
static gc_status group_norm_check(const gc_tensor *x, const gc_tensor *mean, const gc_tensor *rstd,
                                  const gc_tensor *gamma, const gc_tensor *beta, int32_t groups,
                                  int cl, int64_t *B, int64_t *C, int64_t *S) {
  if (x->ndim < 2) return want_ndim(x, "x", 4, cl ? "[B,H,W,C]" : "[B,C,H,W]");
  *B = x->dims[0];
  *C = x->dims[cl ? x->ndim - 1 : 1];
  *S = cl ? dims_prod(x, 1, x->ndim - 1) : dims_prod(x, 2, x->ndim);
  if (groups < 1 || *C % groups)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "groups (%d) must divide channels (%lld)",
                        groups, (long long)*C);
  int64_t stat[2] = {*B, groups};
  CHECK(want_shape(mean, "mean", 2, stat));
  CHECK(want_shape(rstd, "rstd", 2, stat));
  if (gamma) CHECK(want_shape(gamma, "gamma", 1, C));
  if (beta) CHECK(want_shape(beta, "beta", 1, C));
  return GC_OK;
}

gc_status gc_group_norm_forward(gc_handle ctx, gc_handle y, gc_handle mean, gc_handle rstd,
                                gc_handle x, gc_handle gamma, gc_handle beta, int32_t groups,
                                float eps, int32_t silu, int32_t channels_last) {
  OP_BEGIN("group_norm_forward");
  ARG(y);
  ARG(mean);
  ARG(rstd);
  ARG(x);
  OPT(gamma);
  OPT(beta);
  int64_t B = 0, C = 0, S = 0;
  CHECK(group_norm_check(x_t, mean_t, rstd_t, gamma_t, beta_t, groups, channels_last != 0, &B, &C,
                         &S));
  CHECK(want_same(y_t, "y", x_t, "x"));
  if (!(eps > 0)) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "eps must be > 0");
  return be_group_norm_forward(c->be, F(y), F(mean), F(rstd), F(x), F(gamma), F(beta), B, C, S,
                               groups, eps, silu != 0, channels_last != 0);
}

gc_status gc_group_norm_backward(gc_handle ctx, gc_handle dx, gc_handle dgamma, gc_handle dbeta,
                                 gc_handle dy, gc_handle x, gc_handle mean, gc_handle rstd,
                                 gc_handle gamma, gc_handle beta, int32_t groups, int32_t silu,
                                 int32_t channels_last) {
  OP_BEGIN("group_norm_backward");
  OPT(dx);
  OPT(dgamma);
  OPT(dbeta);
  ARG(dy);
  ARG(x);
  ARG(mean);
  ARG(rstd);
  OPT(gamma);
  OPT(beta); /* only read with silu (the norm's output is recomputed) */
  int64_t B = 0, C = 0, S = 0;
  CHECK(group_norm_check(x_t, mean_t, rstd_t, gamma_t, beta_t, groups, channels_last != 0, &B, &C,
                         &S));
  CHECK(want_same(dy_t, "dy", x_t, "x"));
  WANT_SAME_OPT(dx, x);
  if (dgamma_t) CHECK(want_shape(dgamma_t, "dgamma", 1, &C));
  if (dbeta_t) CHECK(want_shape(dbeta_t, "dbeta", 1, &C));
  return be_group_norm_backward(c->be, F(dx), F(dgamma), F(dbeta), F(dy), F(x), F(mean),
                                F(rstd), F(gamma), F(beta), B, C, S, groups, silu != 0,
                                channels_last != 0);
}

static gc_status layer_norm_check(const gc_tensor *x, const gc_tensor *mean, const gc_tensor *rstd,
                                  const gc_tensor *gamma, const gc_tensor *beta, int64_t *N,
                                  int64_t *D) {
  *D = x->dims[x->ndim - 1];
  *N = x->numel / *D;
  CHECK(want_numel(mean, "mean", *N));
  CHECK(want_numel(rstd, "rstd", *N));
  if (gamma) CHECK(want_shape(gamma, "gamma", 1, D));
  if (beta) CHECK(want_shape(beta, "beta", 1, D));
  return GC_OK;
}

gc_status gc_layer_norm_forward(gc_handle ctx, gc_handle y, gc_handle mean, gc_handle rstd,
                                gc_handle x, gc_handle gamma, gc_handle beta, float eps) {
  OP_BEGIN("layer_norm_forward");
  ARG(y);
  ARG(mean);
  ARG(rstd);
  ARG(x);
  OPT(gamma);
  OPT(beta);
  int64_t N = 0, D = 0;
  CHECK(layer_norm_check(x_t, mean_t, rstd_t, gamma_t, beta_t, &N, &D));
  CHECK(want_same(y_t, "y", x_t, "x"));
  if (!(eps > 0)) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "eps must be > 0");
  return be_layer_norm_forward(c->be, F(y), F(mean), F(rstd), F(x), F(gamma), F(beta), N, D, eps);
}

gc_status gc_layer_norm_backward(gc_handle ctx, gc_handle dx, gc_handle dgamma, gc_handle dbeta,
                                 gc_handle dy, gc_handle x, gc_handle mean, gc_handle rstd,
                                 gc_handle gamma) {
  OP_BEGIN("layer_norm_backward");
  OPT(dx);
  OPT(dgamma);
  OPT(dbeta);
  ARG(dy);
  ARG(x);
  ARG(mean);
  ARG(rstd);
  OPT(gamma);
  int64_t N = 0, D = 0;
  CHECK(layer_norm_check(x_t, mean_t, rstd_t, gamma_t, NULL, &N, &D));
  CHECK(want_same(dy_t, "dy", x_t, "x"));
  WANT_SAME_OPT(dx, x);
  if (dgamma_t) CHECK(want_shape(dgamma_t, "dgamma", 1, &D));
  if (dbeta_t) CHECK(want_shape(dbeta_t, "dbeta", 1, &D));
  return be_layer_norm_backward(c->be, F(dx), F(dgamma), F(dbeta), F(dy), F(x), F(mean), F(rstd),
                                F(gamma), N, D);
}

static gc_status activation_check(gc_activation kind) {
  if (kind >= GC_ACT_SILU && kind <= GC_ACT_QUICK_GELU) return GC_OK;
  return gc_set_error(GC_ERR_INVALID_ARGUMENT, "unknown activation kind %d", (int)kind);
}

gc_status gc_activation_forward(gc_handle ctx, gc_activation kind, gc_handle y, gc_handle x) {
  OP_BEGIN("activation_forward");
  ARG(y);
  ARG(x);
  CHECK(activation_check(kind));
  CHECK(want_same(y_t, "y", x_t, "x"));
  return be_activation_forward(c->be, kind, F(y), F(x), x_t->numel);
}

gc_status gc_activation_backward(gc_handle ctx, gc_activation kind, gc_handle dx, gc_handle dy,
                                 gc_handle x) {
  OP_BEGIN("activation_backward");
  ARG(dx);
  ARG(dy);
  ARG(x);
  CHECK(activation_check(kind));
  CHECK(want_same(dx_t, "dx", x_t, "x"));
  CHECK(want_same(dy_t, "dy", x_t, "x"));
  return be_activation_backward(c->be, kind, F(dx), F(dy), F(x), x_t->numel);
}

static gc_status geglu_check(const gc_tensor *y, const gc_tensor *x, int64_t *N, int64_t *D) {
  int64_t two_d = x->dims[x->ndim - 1];
  if (two_d % 2)
    return gc_set_error(GC_ERR_SHAPE, "x's last dim (%lld) must be even", (long long)two_d);
  *D = two_d / 2;
  *N = x->numel / two_d;
  int64_t want[GC_MAX_DIMS];
  memcpy(want, x->dims, sizeof want);
  want[x->ndim - 1] = *D;
  return want_shape(y, "y", x->ndim, want);
}

gc_status gc_geglu_forward(gc_handle ctx, gc_handle y, gc_handle x) {
  OP_BEGIN("geglu_forward");
  ARG(y);
  ARG(x);
  int64_t N = 0, D = 0;
  CHECK(geglu_check(y_t, x_t, &N, &D));
  return be_geglu_forward(c->be, F(y), F(x), N, D);
}

gc_status gc_geglu_feedforward_forward(gc_handle ctx, gc_handle y, gc_handle x, gc_handle w1,
                                       gc_handle b1, gc_handle w2, gc_handle b2, gc_handle h,
                                       gc_handle g) {
  OP_BEGIN("geglu_feedforward_forward");
  ARG(y);
  ARG(x);
  ARG(w1);
  OPT(b1);
  ARG(w2);
  OPT(b2);
  OPT(h);
  OPT(g);
  CHECK(want_ndim(w1_t, "w1", 2, "[2F,I]"));
  CHECK(want_ndim(w2_t, "w2", 2, "[O,F]"));
  const int64_t F2 = w1_t->dims[0], I = w1_t->dims[1], O = w2_t->dims[0];
  if (F2 % 2)
    return gc_set_error(GC_ERR_SHAPE, "w1's first dim (%lld) must be even: [h | g]", (long long)F2);
  if (w2_t->dims[1] != F2 / 2)
    return gc_set_error(GC_ERR_SHAPE, "w2 takes %lld inputs but w1 gives %lld after GEGLU",
                        (long long)w2_t->dims[1], (long long)(F2 / 2));
  if (x_t->dims[x_t->ndim - 1] != I)
    return gc_set_error(GC_ERR_SHAPE, "x's last dim is %lld but w1 expects %lld inputs",
                        (long long)x_t->dims[x_t->ndim - 1], (long long)I);
  const int64_t N = I ? x_t->numel / I : 0;
  if (b1) CHECK(want_shape(b1_t, "b1", 1, &F2));
  if (b2) CHECK(want_shape(b2_t, "b2", 1, &O));
  int64_t want[GC_MAX_DIMS];
  memcpy(want, x_t->dims, sizeof want);
  want[x_t->ndim - 1] = O;
  CHECK(want_shape(y_t, "y", x_t->ndim, want));
  want[x_t->ndim - 1] = F2;
  if (h) CHECK(want_shape(h_t, "h", x_t->ndim, want));
  want[x_t->ndim - 1] = F2 / 2;
  if (g) CHECK(want_shape(g_t, "g", x_t->ndim, want));
  return be_geglu_feedforward_forward(c->be, F(y), F(x), F(w1), F(b1), F(w2), F(b2), F(h), F(g), N,
                                      I, F2 / 2, O);
}

gc_status gc_geglu_backward(gc_handle ctx, gc_handle dx, gc_handle dy, gc_handle x) {
  OP_BEGIN("geglu_backward");
  ARG(dx);
  ARG(dy);
  ARG(x);
  int64_t N = 0, D = 0;
  CHECK(geglu_check(dy_t, x_t, &N, &D));
  CHECK(want_same(dx_t, "dx", x_t, "x"));
  return be_geglu_backward(c->be, F(dx), F(dy), F(x), N, D);
}

typedef struct attn_dims {
  int64_t B, Tq, Tk, H, Dh;
} attn_dims;

static gc_status attention_check(const gc_tensor *out, const gc_tensor *probs, const gc_tensor *q,
                                 const gc_tensor *k, const gc_tensor *v, int32_t heads,
                                 attn_dims *d) {
  CHECK(want_ndim(q, "q", 3, "[B,Tq,H*Dh]"));
  CHECK(want_ndim(k, "k", 3, "[B,Tk,H*Dh]"));
  CHECK(want_same(v, "v", k, "k"));
  if (heads < 1 || q->dims[2] % heads)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "heads (%d) must divide the width %lld", heads,
                        (long long)q->dims[2]);
  if (k->dims[0] != q->dims[0] || k->dims[2] != q->dims[2])
    return gc_set_error(GC_ERR_SHAPE, "k [%lld,%lld,%lld] must match q's batch and width %lld",
                        (long long)k->dims[0], (long long)k->dims[1], (long long)k->dims[2],
                        (long long)q->dims[2]);
  *d = (attn_dims){.B = q->dims[0], .Tq = q->dims[1], .Tk = k->dims[1], .H = heads,
                   .Dh = q->dims[2] / heads};
  CHECK(want_same(out, "out", q, "q"));
  if (!probs) return GC_OK; /* the forward may skip them (no backward to follow) */
  int64_t ps[4] = {d->B, d->H, d->Tq, d->Tk};
  return want_shape(probs, "probs", 4, ps);
}

static float attention_scale(float scale, int64_t Dh) {
  return scale > 0 ? scale : (float)(1.0 / sqrt((double)Dh));
}

gc_status gc_attention_forward(gc_handle ctx, gc_handle out, gc_handle probs, gc_handle q,
                               gc_handle k, gc_handle v, int32_t heads, int32_t causal,
                               float scale) {
  OP_BEGIN("attention_forward");
  ARG(out);
  OPT(probs);
  ARG(q);
  ARG(k);
  ARG(v);
  attn_dims d;
  CHECK(attention_check(out_t, probs_t, q_t, k_t, v_t, heads, &d));
  if (causal && d.Tq != d.Tk)
    return gc_set_error(GC_ERR_SHAPE, "causal attention needs Tq == Tk, got %lld and %lld",
                        (long long)d.Tq, (long long)d.Tk);
  CHECK(want_finite(scale, "scale"));
  return be_attention_forward(c->be, F(out), F(probs), F(q), F(k), F(v), d.B, d.Tq, d.Tk, d.H,
                              d.Dh, causal != 0, attention_scale(scale, d.Dh));
}

gc_status gc_attention_backward(gc_handle ctx, gc_handle dq, gc_handle dk, gc_handle dv,
                                gc_handle dout, gc_handle q, gc_handle k, gc_handle v,
                                gc_handle probs, int32_t heads, float scale) {
  OP_BEGIN("attention_backward");
  OPT(dq);
  OPT(dk);
  OPT(dv);
  ARG(dout);
  ARG(q);
  ARG(k);
  ARG(v);
  ARG(probs);
  attn_dims d;
  CHECK(attention_check(dout_t, probs_t, q_t, k_t, v_t, heads, &d));
  WANT_SAME_OPT(dq, q);
  WANT_SAME_OPT(dk, k);
  WANT_SAME_OPT(dv, v);
  CHECK(want_finite(scale, "scale"));
  return be_attention_backward(c->be, F(dq), F(dk), F(dv), F(dout), F(q), F(k), F(v), F(probs),
                               d.B, d.Tq, d.Tk, d.H, d.Dh, attention_scale(scale, d.Dh));
}

static gc_status embedding_check(gc_ctx *c, const gc_tensor *y, const gc_tensor *ids,
                                 const gc_tensor *tok, const gc_tensor *pos, int64_t *B,
                                 int64_t *L, int64_t *D, int64_t *V) {
  if (ids->dtype != GC_I32) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "ids must be i32");
  CHECK(want_ndim(ids, "ids", 2, "[B,L]"));
  CHECK(want_ndim(tok, "tok", 2, "[V,D]"));
  *B = ids->dims[0];
  *L = ids->dims[1];
  *V = tok->dims[0];
  *D = tok->dims[1];
  int64_t ys[3] = {*B, *L, *D};
  CHECK(want_shape(y, "y", 3, ys));
  if (pos) {
    CHECK(want_ndim(pos, "pos", 2, "[P,D]"));
    if (pos->dims[1] != *D || pos->dims[0] < *L)
      return gc_set_error(GC_ERR_SHAPE, "pos [%lld,%lld] must be [P>=%lld,%lld]",
                          (long long)pos->dims[0], (long long)pos->dims[1], (long long)*L,
                          (long long)*D);
  }
  int64_t bad = -1;
  int32_t value = 0;
  CHECK(be_check_ids(c->be, ids->data, ids->numel, *V, &bad, &value));
  if (bad >= 0)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "token id %d at [%lld,%lld] is outside [0,%lld)",
                        value, (long long)(bad / *L), (long long)(bad % *L), (long long)*V);
  return GC_OK;
}

gc_status gc_embedding_forward(gc_handle ctx, gc_handle y, gc_handle ids, gc_handle tok,
                               gc_handle pos) {
  OP_BEGIN("embedding_forward");
  ARG(y);
  gc_tensor *ids_t = gc_get_tensor(c, ids, "ids");
  if (!ids_t) return GC_ERR_HANDLE;
  ARG(tok);
  OPT(pos);
  int64_t B = 0, L = 0, D = 0, V = 0;
  CHECK(embedding_check(c, y_t, ids_t, tok_t, pos_t, &B, &L, &D, &V));
  return be_embedding_forward(c->be, F(y), ids_t->data, F(tok), F(pos), B, L, D, V);
}

gc_status gc_embedding_backward(gc_handle ctx, gc_handle dtok, gc_handle dpos, gc_handle dy,
                                gc_handle ids) {
  OP_BEGIN("embedding_backward");
  OPT(dtok);
  OPT(dpos);
  ARG(dy);
  gc_tensor *ids_t = gc_get_tensor(c, ids, "ids");
  if (!ids_t) return GC_ERR_HANDLE;
  if (!dtok_t && !dpos_t) return GC_OK;
  int64_t B = 0, L = 0, D = 0, V = 0;
  if (dtok_t) {
    CHECK(embedding_check(c, dy_t, ids_t, dtok_t, dpos_t, &B, &L, &D, &V));
  } else {
    /* Only positions: any V accepted, no range check needed for the position gradient. */
    CHECK(want_ndim(ids_t, "ids", 2, "[B,L]"));
    B = ids_t->dims[0];
    L = ids_t->dims[1];
    D = dpos_t->dims[dpos_t->ndim - 1];
    V = 0;
    int64_t ys[3] = {B, L, D};
    CHECK(want_shape(dy_t, "dy", 3, ys));
    CHECK(want_ndim(dpos_t, "dpos", 2, "[P,D]"));
    if (dpos_t->dims[0] < L) return gc_set_error(GC_ERR_SHAPE, "dpos has fewer than L rows");
  }
  return be_embedding_backward(c->be, F(dtok), F(dpos), F(dy), ids_t->data, B, L, D, V);
}

static gc_status timestep_check(const gc_tensor *y, const gc_tensor *t, float freq_shift,
                                float max_period) {
  CHECK(want_ndim(t, "t", 1, "[B]"));
  CHECK(want_ndim(y, "y", 2, "[B,D]"));
  if (y->dims[0] != t->dims[0])
    return gc_set_error(GC_ERR_SHAPE, "y has %lld rows but t has %lld", (long long)y->dims[0],
                        (long long)t->dims[0]);
  if (y->dims[1] < 2) return gc_set_error(GC_ERR_SHAPE, "embedding dim must be >= 2");
  if (!(max_period > 1) || !isfinite(freq_shift) || (double)(y->dims[1] / 2) - freq_shift <= 0)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "need max_period > 1 and D/2 - freq_shift > 0 (got %g, %g)",
                        (double)max_period, (double)freq_shift);
  return GC_OK;
}

gc_status gc_timestep_embedding_forward(gc_handle ctx, gc_handle y, gc_handle t,
                                        int32_t flip_sin_to_cos, float freq_shift,
                                        float max_period) {
  OP_BEGIN("timestep_embedding_forward");
  ARG(y);
  ARG(t);
  CHECK(timestep_check(y_t, t_t, freq_shift, max_period));
  return be_timestep_embedding_forward(c->be, F(y), F(t), y_t->dims[0], y_t->dims[1],
                                       flip_sin_to_cos != 0, freq_shift, max_period);
}

gc_status gc_timestep_embedding_backward(gc_handle ctx, gc_handle dt, gc_handle dy, gc_handle t,
                                         int32_t flip_sin_to_cos, float freq_shift,
                                         float max_period) {
  OP_BEGIN("timestep_embedding_backward");
  ARG(dt);
  ARG(dy);
  ARG(t);
  CHECK(timestep_check(dy_t, t_t, freq_shift, max_period));
  CHECK(want_same(dt_t, "dt", t_t, "t"));
  return be_timestep_embedding_backward(c->be, F(dt), F(dy), F(t), dy_t->dims[0], dy_t->dims[1],
                                        flip_sin_to_cos != 0, freq_shift, max_period);
}

static gc_status mse_check(const gc_tensor *loss, const gc_tensor *a, const gc_tensor *b,
                           const gc_tensor *weights) {
  if (loss) CHECK(want_numel(loss, "loss", 1));
  CHECK(want_same(b, "b", a, "a"));
  if (weights) CHECK(want_shape(weights, "weights", 1, &a->dims[0]));
  return GC_OK;
}

gc_status gc_mse_forward(gc_handle ctx, gc_handle loss, gc_handle a, gc_handle b,
                         gc_handle weights) {
  OP_BEGIN("mse_forward");
  ARG(loss);
  ARG(a);
  ARG(b);
  OPT(weights);
  CHECK(mse_check(loss_t, a_t, b_t, weights_t));
  return be_mse_forward(c->be, F(loss), F(a), F(b), F(weights), a_t->dims[0],
                        a_t->numel / a_t->dims[0]);
}

gc_status gc_mse_backward(gc_handle ctx, gc_handle da, gc_handle db, float dloss, gc_handle a,
                          gc_handle b, gc_handle weights) {
  OP_BEGIN("mse_backward");
  OPT(da);
  OPT(db);
  ARG(a);
  ARG(b);
  OPT(weights);
  CHECK(mse_check(NULL, a_t, b_t, weights_t));
  WANT_SAME_OPT(da, a);
  WANT_SAME_OPT(db, a);
  CHECK(want_finite(dloss, "dloss"));
  return be_mse_backward(c->be, F(da), F(db), dloss, F(a), F(b), F(weights), a_t->dims[0],
                         a_t->numel / a_t->dims[0]);
}

/* ---- diffusion and DDPO ------------------------------------------------------------------ */

/* Shared checks of the DDIM step: x_t, eps, x_prev [B,...] alike; then every per-sample
 * coefficient (ddim.h), computed once here in double and handed to the backend. The one rule for
 * eta is > 0: the log-prob needs sigma > 0. *out is malloc'ed (B entries) on success. */
static gc_status ddim_prepare(const gc_tensor *x_prev, const gc_tensor *log_prob,
                              const gc_tensor *mean, const gc_tensor *x_t, const gc_tensor *eps,
                              const double *alpha_t, const double *alpha_prev, float eta,
                              float clip_x0, gc_ddim_coef **out) {
  *out = NULL;
  CHECK(want_same(eps, "eps", x_t, "x_t"));
  CHECK(want_same(x_prev, "x_prev", x_t, "x_t"));
  if (mean) CHECK(want_same(mean, "mean", x_t, "x_t"));
  if (log_prob) CHECK(want_shape(log_prob, "log_prob", 1, &x_t->dims[0]));
  if (!alpha_t || !alpha_prev)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "alpha_t and alpha_prev (host, [B]) are required");
  if (!(eta > 0.0f) || !isfinite(eta))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "eta must be finite and > 0 (got %g): the log-prob needs sigma > 0",
                        (double)eta);
  if (isnan(clip_x0)) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "clip_x0 is NaN");
  const int64_t B = x_t->dims[0];
  gc_ddim_coef *c = malloc((size_t)B * sizeof *c); /* tensors have no zero dimension: B >= 1 */
  if (!c) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "DDIM coefficients for %lld samples", (long long)B);
  for (int64_t b = 0; b < B; b++) {
    double a = alpha_t[b], ap = alpha_prev[b];
    gc_status st = GC_OK;
    if (!(a > 0 && a <= 1 && ap > 0 && ap <= 1))
      st = gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "sample %lld: alphas must lie in (0,1], got alpha_t=%g alpha_prev=%g",
                        (long long)b, a, ap);
    else if (ap < a)
      st = gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "sample %lld: alpha_prev (%g) must be >= alpha_t (%g): a step goes towards "
                        "less noise", (long long)b, ap, a);
    double sigma = st == GC_OK ? (double)eta * sqrt((1.0 - ap) / (1.0 - a)) * sqrt(1.0 - a / ap) : 0;
    if (st == GC_OK && (!(sigma > 0.0) || !isfinite(sigma)))
      st = gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "sample %lld: sigma = %g is not > 0 (alpha_t %.17g, alpha_prev %.17g, eta "
                        "%g); a step needs alpha_t < alpha_prev and alpha_t < 1", (long long)b,
                        sigma, a, ap, (double)eta);
    /* 1 - a' - sigma^2 >= 0 holds for eta <= 1; a larger eta can push it below zero. */
    double dir2 = 1.0 - ap - sigma * sigma;
    if (st == GC_OK && dir2 < -1e-12)
      st = gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "sample %lld: 1 - alpha_prev - sigma^2 = %g < 0 (eta %g too large for "
                        "alpha_t %.17g, alpha_prev %.17g)", (long long)b, dir2, (double)eta, a, ap);
    if (st != GC_OK) {
      free(c);
      return st;
    }
    c[b].sqrt_a = sqrt(a);
    c[b].sqrt_1ma = sqrt(1.0 - a);
    c[b].sqrt_ap = sqrt(ap);
    c[b].dir = sqrt(fmax(dir2, 0.0));
    c[b].sigma = sigma;
    c[b].log_norm = -log(sigma) - GC_LOG_SQRT_2PI;
  }
  *out = c;
  return GC_OK;
}

gc_status gc_ddim_step_sample(gc_handle ctx, gc_handle x_prev, gc_handle log_prob, gc_handle mean,
                              gc_handle x_t, gc_handle eps, gc_handle noise,
                              const double *alpha_t, const double *alpha_prev, float eta,
                              float clip_x0) {
  OP_BEGIN("ddim_step_sample");
  ARG(x_prev);
  OPT(log_prob);
  OPT(mean);
  ARG(x_t);
  ARG(eps);
  ARG(noise);
  CHECK(want_same(noise_t, "noise", x_t_t, "x_t"));
  gc_ddim_coef *coef;
  CHECK(ddim_prepare(x_prev_t, log_prob_t, mean_t, x_t_t, eps_t, alpha_t, alpha_prev, eta, clip_x0,
                     &coef));
  const int64_t B = x_t_t->dims[0];
  gc_status st = be_ddim_step(c->be, F(x_prev), F(log_prob), F(mean), F(x_t), F(eps), F(noise), coef,
                              clip_x0, B, x_t_t->numel / B);
  free(coef);
  return st;
}

gc_status gc_ddim_step_log_prob(gc_handle ctx, gc_handle log_prob, gc_handle mean,
                                gc_handle x_prev, gc_handle x_t, gc_handle eps,
                                const double *alpha_t, const double *alpha_prev, float eta,
                                float clip_x0) {
  OP_BEGIN("ddim_step_log_prob");
  ARG(log_prob);
  OPT(mean);
  ARG(x_prev);
  ARG(x_t);
  ARG(eps);
  gc_ddim_coef *coef;
  CHECK(ddim_prepare(x_prev_t, log_prob_t, mean_t, x_t_t, eps_t, alpha_t, alpha_prev, eta, clip_x0,
                     &coef));
  const int64_t B = x_t_t->dims[0];
  gc_status st = be_ddim_step(c->be, F(x_prev), F(log_prob), F(mean), F(x_t), F(eps), NULL, coef,
                              clip_x0, B, x_t_t->numel / B);
  free(coef);
  return st;
}

gc_status gc_ddim_step_log_prob_backward(gc_handle ctx, gc_handle deps, gc_handle dlog_prob,
                                         gc_handle x_prev, gc_handle x_t, gc_handle eps,
                                         const double *alpha_t, const double *alpha_prev,
                                         float eta, float clip_x0) {
  OP_BEGIN("ddim_step_log_prob_backward");
  ARG(deps);
  ARG(dlog_prob);
  ARG(x_prev);
  ARG(x_t);
  ARG(eps);
  CHECK(want_same(deps_t, "deps", x_t_t, "x_t"));
  gc_ddim_coef *coef;
  CHECK(ddim_prepare(x_prev_t, dlog_prob_t, NULL, x_t_t, eps_t, alpha_t, alpha_prev, eta, clip_x0,
                     &coef));
  const int64_t B = x_t_t->dims[0];
  gc_status st = be_ddim_step_log_prob_backward(c->be, F(deps), F(dlog_prob), F(x_prev), F(x_t),
                                                F(eps), coef, clip_x0, B, x_t_t->numel / B);
  free(coef);
  return st;
}

static gc_status ddpo_check(const gc_tensor *loss, const gc_tensor *log_prob,
                            const gc_tensor *old_log_prob, const gc_tensor *advantages,
                            float clip_range, float adv_clip_max) {
  if (loss) CHECK(want_numel(loss, "loss", 1));
  CHECK(want_ndim(log_prob, "log_prob", 1, "[N]"));
  if (old_log_prob) CHECK(want_same(old_log_prob, "old_log_prob", log_prob, "log_prob"));
  CHECK(want_same(advantages, "advantages", log_prob, "log_prob"));
  if (!(clip_range >= 0) || !isfinite(clip_range))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "clip_range must be finite and >= 0");
  if (!(adv_clip_max > 0) || !isfinite(adv_clip_max))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "adv_clip_max must be finite and > 0 (got %g)",
                        (double)adv_clip_max);
  return GC_OK;
}

gc_status gc_ddpo_is_forward(gc_handle ctx, gc_handle loss, gc_handle stats, gc_handle log_prob,
                             gc_handle old_log_prob, gc_handle advantages, float clip_range,
                             float adv_clip_max) {
  OP_BEGIN("ddpo_is_forward");
  ARG(loss);
  OPT(stats);
  ARG(log_prob);
  ARG(old_log_prob);
  ARG(advantages);
  CHECK(ddpo_check(loss_t, log_prob_t, old_log_prob_t, advantages_t, clip_range, adv_clip_max));
  if (stats_t) CHECK(want_numel(stats_t, "stats", 2));
  return be_ddpo_is_forward(c->be, F(loss), F(stats), F(log_prob), F(old_log_prob),
                            F(advantages), log_prob_t->numel, clip_range, adv_clip_max);
}

gc_status gc_ddpo_is_backward(gc_handle ctx, gc_handle dlog_prob, float dloss,
                              gc_handle log_prob, gc_handle old_log_prob, gc_handle advantages,
                              float clip_range, float adv_clip_max) {
  OP_BEGIN("ddpo_is_backward");
  ARG(dlog_prob);
  ARG(log_prob);
  ARG(old_log_prob);
  ARG(advantages);
  CHECK(ddpo_check(NULL, log_prob_t, old_log_prob_t, advantages_t, clip_range, adv_clip_max));
  CHECK(want_same(dlog_prob_t, "dlog_prob", log_prob_t, "log_prob"));
  CHECK(want_finite(dloss, "dloss"));
  return be_ddpo_is_backward(c->be, F(dlog_prob), dloss, F(log_prob), F(old_log_prob),
                             F(advantages), log_prob_t->numel, clip_range, adv_clip_max);
}

gc_status gc_ddpo_sf_forward(gc_handle ctx, gc_handle loss, gc_handle log_prob,
                             gc_handle advantages, float adv_clip_max) {
  OP_BEGIN("ddpo_sf_forward");
  ARG(loss);
  ARG(log_prob);
  ARG(advantages);
  CHECK(ddpo_check(loss_t, log_prob_t, NULL, advantages_t, 0, adv_clip_max));
  return be_ddpo_sf_forward(c->be, F(loss), F(log_prob), F(advantages), log_prob_t->numel,
                            adv_clip_max);
}

gc_status gc_ddpo_sf_backward(gc_handle ctx, gc_handle dlog_prob, float dloss,
                              gc_handle advantages, float adv_clip_max) {
  OP_BEGIN("ddpo_sf_backward");
  ARG(dlog_prob);
  ARG(advantages);
  CHECK(ddpo_check(NULL, dlog_prob_t, NULL, advantages_t, 0, adv_clip_max));
  CHECK(want_finite(dloss, "dloss"));
  return be_ddpo_sf_backward(c->be, F(dlog_prob), dloss, F(advantages), dlog_prob_t->numel,
                             adv_clip_max);
}

/* ---- optimisation and randomness ------------------------------------------------------- */

gc_status gc_adamw_step(gc_handle ctx, gc_handle params, gc_handle grads, gc_handle m,
                        gc_handle v, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t step) {
  OP_BEGIN("adamw_step");
  ARG(params);
  ARG(grads);
  ARG(m);
  ARG(v);
  int64_t n = params_t->numel;
  CHECK(want_numel(grads_t, "grads", n));
  CHECK(want_numel(m_t, "m", n));
  CHECK(want_numel(v_t, "v", n));
  if (step < 1) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "step must be >= 1, got %lld", (long long)step);
  if (!(lr >= 0) || !isfinite(lr) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) ||
      !(eps > 0) || !(weight_decay >= 0) || !isfinite(weight_decay))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "need lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0 "
                        "(got %g, %g, %g, %g, %g)",
                        (double)lr, (double)beta1, (double)beta2, (double)eps,
                        (double)weight_decay);
  return be_adamw_step(c->be, F(params), F(grads), F(m), F(v), n, lr, beta1, beta2, eps,
                       weight_decay, step);
}

gc_status gc_clip_grad_norm(gc_handle ctx, gc_handle grads, float max_norm, double *out_norm) {
  OP_BEGIN("clip_grad_norm");
  ARG(grads);
  if (!isfinite(max_norm)) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "max_norm must be finite");
  double ss = 0;
  CHECK(be_sum_squares(c->be, F(grads), grads_t->numel, &ss));
  double norm = sqrt(ss);
  if (out_norm) *out_norm = norm;
  /* A non-finite norm is reported, and the gradients are left as they are for the caller to
   * inspect (scaling would spread the NaN/Inf everywhere). */
  if (max_norm > 0 && isfinite(norm) && norm > max_norm)
    return be_scale(c->be, F(grads), grads_t->numel, (float)(max_norm / (norm + 1e-6)));
  return GC_OK;
}

gc_status gc_randn(gc_handle ctx, gc_handle y, uint64_t seed, uint64_t offset) {
  OP_BEGIN("randn");
  ARG(y);
  return be_randn(c->be, F(y), y_t->numel, seed, offset);
}
