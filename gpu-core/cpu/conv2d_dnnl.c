/*
 * 3x3 convolutions through oneDNN (Debian's libdnnl, the library PyTorch uses on CPUs): its
 * AVX-512 direct kernels work on channel-blocked layouts (nChw16c, OIhw16i16o), so each call
 * reorders our plain NCHW/OIHW operands into the layout the primitive asks for (format_tag any),
 * runs the primitive and reorders the result back. conv2d.c's header has the measurements that
 * chose this over plain-layout oneDNN and over our own GEMM paths.
 *
 * Primitives are created once per shape (a few ms each) and kept in a process-wide cache, keyed
 * by the shape and whether the forward has a bias, under a mutex; execution happens outside it.
 * Everything that changes per call (the reordered operands, oneDNN's scratchpad, the memory
 * objects, the stream) belongs to the call, so threads may run the same shape at once. The
 * cache holds one entry per distinct shape and lives as long as the process.
 *
 * Threads: Debian builds oneDNN on the OpenMP runtime (checked against the header at build time
 * and against the loaded library at first use, dnnl_call.c), so it runs on the same libgomp pool,
 * with the same thread count (omp_set_num_threads from the context's threads=N), as the rest of
 * the backend.
 */
#include "conv2d_dnnl.h"
#include "dnnl_call.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* All int64_t, so no padding bytes: keys are compared with memcmp. */
typedef struct conv_key {
  int64_t B, C, H, W, O, K, stride, pad, Ho, Wo;
  int64_t bias; /* the forward adds a bias (backward entries always have one, for db) */
  int64_t cl;   /* channels-last activations (nhwc) */
} conv_key;

/* One operand between our plain layout and the one the primitive chose. */
typedef struct side {
  dnnl_memory_desc_t lib;
  dnnl_primitive_t reorder; /* plain -> lib for inputs, lib -> plain for outputs; NULL when equal */
  size_t bytes;             /* the lib copy's size, 0 without a reorder */
} side;

typedef struct conv_entry {
  conv_key k;
  dnnl_memory_desc_t x, w, b, y; /* plain: nchw (nhwc when cl), oihw, x, nchw (nhwc) */
  dnnl_primitive_desc_t fpd;      /* the forward's, the hint the backward ones are created with */
  dnnl_primitive_t fwd, bwd_data, bwd_weights;
  side f_x, f_w, f_y;   /* forward: x, w in; y out */
  side d_dy, d_w, d_dx; /* backward data: dy, w in; dx out */
  side w_x, w_dy, w_dw; /* backward weights: x, dy in; dw out (db is always plain) */
  struct conv_entry *next;
} conv_entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* the cache */
static dnnl_engine_t g_engine;
static dnnl_primitive_attr_t g_attr; /* scratchpad supplied by the caller, per call */
static conv_entry *g_entries;

int dnnl_conv_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                       int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return (cl || (K == 3 && C >= 16 && O >= 16)) && (Ho - 1) * stride + K - H - pad >= 0 &&
         (Wo - 1) * stride + K - W - pad >= 0;
}

/* "conv2d B.. C->O channels HxW, k s p", for error messages */
static const char *describe(const conv_key *k, char *buf, size_t n) {
  snprintf(buf, n, "conv2d B%lld %lld->%lld channels %lldx%lld, k%lld s%lld p%lld%s", (long long)k->B,
           (long long)k->C, (long long)k->O, (long long)k->H, (long long)k->W, (long long)k->K,
           (long long)k->stride, (long long)k->pad, k->cl ? " (channels last)" : "");
  return buf;
}

static gc_status dnnl_error(dnnl_status_t s, const char *what, const conv_key *k) {
  char op[128];
  return dnnl_fail(s, what, describe(k, op, sizeof op));
}

static dnnl_status_t side_init(side *s, const dnnl_memory_desc_t *plain,
                               const dnnl_memory_desc_t *lib, int output) {
  s->lib = *lib;
  s->reorder = NULL;
  s->bytes = 0;
  if (dnnl_memory_desc_equal(plain, lib)) return dnnl_success;
  s->bytes = dnnl_memory_desc_get_size(lib);
  dnnl_primitive_desc_t rpd;
  DNNL_TRY(output ? dnnl_reorder_primitive_desc_create(&rpd, lib, g_engine, plain, g_engine, g_attr)
             : dnnl_reorder_primitive_desc_create(&rpd, plain, g_engine, lib, g_engine, g_attr));
  dnnl_status_t st = dnnl_primitive_create(&s->reorder, rpd);
  dnnl_primitive_desc_destroy(rpd);
  return st;
}

static void conv_geometry(const conv_key *k, dnnl_dims_t strides, dnnl_dims_t pl, dnnl_dims_t pr) {
  strides[0] = strides[1] = k->stride;
  pl[0] = pl[1] = k->pad;
  pr[0] = (k->Ho - 1) * k->stride + k->K - k->H - k->pad;
  pr[1] = (k->Wo - 1) * k->stride + k->K - k->W - k->pad;
}

/* src, weights, dst descriptors for the primitive: format any (it picks its layouts), but nhwc
 * activations when channels-last, so those are used in place */
static dnnl_status_t any_descs(const conv_key *k, dnnl_memory_desc_t *x, dnnl_memory_desc_t *w,
                               dnnl_memory_desc_t *y) {
  dnnl_dims_t xd = {k->B, k->C, k->H, k->W}, wd = {k->O, k->C, k->K, k->K},
              yd = {k->B, k->O, k->Ho, k->Wo};
  const dnnl_format_tag_t act = k->cl ? dnnl_nhwc : dnnl_format_tag_any;
  DNNL_TRY(dnnl_memory_desc_init_by_tag(x, 4, xd, dnnl_f32, act));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(w, 4, wd, dnnl_f32, dnnl_format_tag_any));
  return dnnl_memory_desc_init_by_tag(y, 4, yd, dnnl_f32, act);
}

static dnnl_status_t entry_init(conv_entry *e) {
  const conv_key *k = &e->k;
  dnnl_dims_t xd = {k->B, k->C, k->H, k->W}, wd = {k->O, k->C, k->K, k->K}, bd = {k->O},
              yd = {k->B, k->O, k->Ho, k->Wo};
  const dnnl_format_tag_t act = k->cl ? dnnl_nhwc : dnnl_nchw;
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&e->x, 4, xd, dnnl_f32, act));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&e->w, 4, wd, dnnl_f32, dnnl_oihw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&e->b, 1, bd, dnnl_f32, dnnl_x));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&e->y, 4, yd, dnnl_f32, act));
  dnnl_memory_desc_t ax, aw, ay;
  DNNL_TRY(any_descs(k, &ax, &aw, &ay));
  dnnl_dims_t st, pl, pr;
  conv_geometry(k, st, pl, pr);
  dnnl_convolution_desc_t cd;
  DNNL_TRY(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &ax,
                                         &aw, k->bias ? &e->b : NULL, &ay, st, pl, pr));
  DNNL_TRY(dnnl_primitive_desc_create(&e->fpd, &cd, g_attr, g_engine, NULL));
  DNNL_TRY(dnnl_primitive_create(&e->fwd, e->fpd));
  DNNL_TRY(side_init(&e->f_x, &e->x, dnnl_primitive_desc_query_md(e->fpd, dnnl_query_src_md, 0), 0));
  DNNL_TRY(side_init(&e->f_w, &e->w, dnnl_primitive_desc_query_md(e->fpd, dnnl_query_weights_md, 0), 0));
  return side_init(&e->f_y, &e->y, dnnl_primitive_desc_query_md(e->fpd, dnnl_query_dst_md, 0), 1);
}

static dnnl_status_t entry_init_backward(conv_entry *e) {
  const conv_key *k = &e->k;
  dnnl_memory_desc_t ax, aw, ay;
  DNNL_TRY(any_descs(k, &ax, &aw, &ay));
  dnnl_dims_t st, pl, pr;
  conv_geometry(k, st, pl, pr);
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd;
  DNNL_TRY(dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &ax, &aw, &ay, st, pl, pr));
  DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, g_attr, g_engine, e->fpd));
  dnnl_status_t s = dnnl_primitive_create(&e->bwd_data, pd);
  if (s == dnnl_success)
    s = side_init(&e->d_dy, &e->y, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0), 0);
  if (s == dnnl_success)
    s = side_init(&e->d_w, &e->w, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 0);
  if (s == dnnl_success)
    s = side_init(&e->d_dx, &e->x, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0), 1);
  dnnl_primitive_desc_destroy(pd);
  DNNL_TRY(s);

  DNNL_TRY(dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &ax, &aw, &e->b,
                                                  &ay, st, pl, pr));
  DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, g_attr, g_engine, e->fpd));
  s = dnnl_primitive_create(&e->bwd_weights, pd);
  if (s == dnnl_success && !dnnl_memory_desc_equal(
                               &e->b, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1)))
    s = dnnl_unimplemented; /* db is written in place, plain */
  if (s == dnnl_success)
    s = side_init(&e->w_x, &e->x, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), 0);
  if (s == dnnl_success)
    s = side_init(&e->w_dy, &e->y, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0), 0);
  if (s == dnnl_success)
    s = side_init(&e->w_dw, &e->w, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0), 1);
  dnnl_primitive_desc_destroy(pd);
  return s;
}

static void destroy_all(dnnl_primitive_t **ps, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (*ps[i]) {
      dnnl_primitive_destroy(*ps[i]);
      *ps[i] = NULL;
    }
}

/* Drops the backward primitives (after a failed creation, so that the next call starts over). */
static void backward_free(conv_entry *e) {
  dnnl_primitive_t *ps[] = {&e->bwd_data, &e->d_dy.reorder, &e->d_w.reorder, &e->d_dx.reorder,
                            &e->bwd_weights, &e->w_x.reorder, &e->w_dy.reorder, &e->w_dw.reorder};
  destroy_all(ps, sizeof ps / sizeof ps[0]);
}

static void entry_free(conv_entry *e) {
  dnnl_primitive_t *ps[] = {&e->fwd, &e->f_x.reorder, &e->f_w.reorder, &e->f_y.reorder};
  destroy_all(ps, sizeof ps / sizeof ps[0]);
  backward_free(e);
  if (e->fpd) dnnl_primitive_desc_destroy(e->fpd);
  free(e);
}

/* The cached entry for k, with its backward primitives when `backward`; created on first use. */
static gc_status entry_get(const conv_key *k, int backward, conv_entry **out) {
  gc_status st = GC_OK;
  dnnl_status_t s = dnnl_success;
  const char *what = "";
  pthread_mutex_lock(&g_lock);
  if (!g_attr) {
    st = dnnl_engine_get(&g_engine);
    if (st != GC_OK) {
      pthread_mutex_unlock(&g_lock);
      return st;
    }
    what = "attribute creation";
    s = dnnl_attr_create(&g_attr);
  }
  conv_entry *e = g_entries;
  while (s == dnnl_success && e && memcmp(&e->k, k, sizeof *k) != 0) e = e->next;
  if (s == dnnl_success && !e) {
    e = calloc(1, sizeof *e);
    if (!e) {
      pthread_mutex_unlock(&g_lock);
      return gc_set_error(GC_ERR_OUT_OF_MEMORY, "cannot allocate a oneDNN convolution cache entry");
    }
    e->k = *k;
    what = "forward primitive creation";
    s = entry_init(e);
    if (s == dnnl_success) {
      e->next = g_entries;
      g_entries = e;
    } else {
      entry_free(e);
      e = NULL;
    }
  }
  if (s == dnnl_success && backward && !e->bwd_weights) {
    what = "backward primitive creation";
    s = entry_init_backward(e);
    if (s != dnnl_success) backward_free(e);
  }
  if (s != dnnl_success) st = dnnl_error(s, what, k);
  pthread_mutex_unlock(&g_lock);
  *out = e;
  return st;
}

/* ---- one call: operands between our layout and the primitive's ---- */

static void reorder(dnnl_call *c, dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to) {
  dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  dnnl_call_exec(c, r, 2, a, "reorder");
}

/* An input in the primitive's layout: the plain tensor itself, or a reordered copy. */
static dnnl_memory_t input(dnnl_call *c, const dnnl_memory_desc_t *plain, const side *s, const void *p) {
  dnnl_memory_t user = dnnl_call_mem(c, plain, p);
  if (!s->reorder) return user;
  dnnl_memory_t lib = dnnl_call_mem(c, &s->lib, dnnl_call_take(c, s->bytes));
  reorder(c, s->reorder, user, lib);
  return lib;
}

/* Where the primitive writes an output: the plain tensor itself, or a copy reordered by finish(). */
static dnnl_memory_t output(dnnl_call *c, const dnnl_memory_desc_t *plain, const side *s, void *p,
                            dnnl_memory_t *user) {
  *user = dnnl_call_mem(c, plain, p);
  return s->reorder ? dnnl_call_mem(c, &s->lib, dnnl_call_take(c, s->bytes)) : *user;
}

static void finish(dnnl_call *c, const side *s, dnnl_memory_t lib, dnnl_memory_t user) {
  if (s->reorder) reorder(c, s->reorder, lib, user);
}

static size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static size_t prim_pad(dnnl_primitive_t p) { return dnnl_scratchpad(p); }

static size_t side_pad(const side *s) { return prim_pad(s->reorder); }

gc_status dnnl_conv2d_forward(float *y, const float *x, const float *w, const float *b, int64_t B,
                              int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                              int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  const conv_key k = {B, C, H, W, O, K, stride, pad, Ho, Wo, b != NULL, cl != 0};
  conv_entry *e;
  gc_status st = entry_get(&k, 0, &e);
  if (st != GC_OK) return st;
  const size_t lib = dnnl_al64(e->f_x.bytes) + dnnl_al64(e->f_w.bytes) + dnnl_al64(e->f_y.bytes);
  const size_t pads =
      max3(prim_pad(e->fwd), side_pad(&e->f_x), max3(side_pad(&e->f_w), side_pad(&e->f_y), 0));
  char op[128];
  describe(&k, op, sizeof op);
  dnnl_call c;
  st = dnnl_call_begin(&c, g_engine, lib, pads, op);
  if (st != GC_OK) return st;
  dnnl_memory_t X = input(&c, &e->x, &e->f_x, x), Wm = input(&c, &e->w, &e->f_w, w), Yu;
  dnnl_memory_t Y = output(&c, &e->y, &e->f_y, y, &Yu);
  dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, X}, {DNNL_ARG_WEIGHTS, Wm}, {DNNL_ARG_DST, Y}};
  int n = 3;
  if (b) {
    a[n].arg = DNNL_ARG_BIAS;
    a[n++].memory = dnnl_call_mem(&c, &e->b, b);
  }
  dnnl_call_exec(&c, e->fwd, n, a, "forward convolution");
  finish(&c, &e->f_y, Y, Yu);
  return dnnl_call_end(&c, op);
}

gc_status dnnl_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, int64_t B, int64_t C, int64_t H, int64_t W,
                               int64_t O, int64_t K, int64_t stride, int64_t pad, int64_t Ho,
                               int64_t Wo, int cl) {
  const conv_key k = {B, C, H, W, O, K, stride, pad, Ho, Wo, 1, cl != 0};
  conv_entry *e;
  gc_status st = entry_get(&k, 1, &e);
  if (st != GC_OK) return st;
  const int wgrad = dw || db;
  /* dy reordered once when both primitives want it in the same layout */
  const int share_dy = dx && wgrad && e->d_dy.reorder && e->w_dy.reorder &&
                       dnnl_memory_desc_equal(&e->d_dy.lib, &e->w_dy.lib);
  const size_t nw = (size_t)(O * C * K * K);
  size_t lib = 0, pads = 0;
  if (dx) {
    lib += dnnl_al64(e->d_dy.bytes) + dnnl_al64(e->d_w.bytes) + dnnl_al64(e->d_dx.bytes);
    pads = max3(prim_pad(e->bwd_data), side_pad(&e->d_dy), max3(side_pad(&e->d_w), side_pad(&e->d_dx), 0));
  }
  if (wgrad) {
    /* + the plain dw and db the primitive writes (=), added onto dw, db (+=) */
    lib += dnnl_al64(e->w_x.bytes) + (share_dy ? 0 : dnnl_al64(e->w_dy.bytes)) + dnnl_al64(e->w_dw.bytes) +
           dnnl_al64(nw * sizeof(float)) + dnnl_al64((size_t)O * sizeof(float));
    pads = max3(pads, prim_pad(e->bwd_weights),
                max3(side_pad(&e->w_x), side_pad(&e->w_dy), side_pad(&e->w_dw)));
  }
  char op[128];
  describe(&k, op, sizeof op);
  dnnl_call c;
  st = dnnl_call_begin(&c, g_engine, lib, pads, op);
  if (st != GC_OK) return st;
  dnnl_memory_t DY = NULL;
  if (dx) {
    DY = input(&c, &e->y, &e->d_dy, dy);
    dnnl_memory_t Wm = input(&c, &e->w, &e->d_w, w), DXu;
    dnnl_memory_t DX = output(&c, &e->x, &e->d_dx, dx, &DXu);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, DY}, {DNNL_ARG_WEIGHTS, Wm}, {DNNL_ARG_DIFF_SRC, DX}};
    dnnl_call_exec(&c, e->bwd_data, 3, a, "backward-data convolution");
    finish(&c, &e->d_dx, DX, DXu);
  }
  if (wgrad) {
    float *tw = dnnl_call_take(&c, nw * sizeof(float)), *tb = dnnl_call_take(&c, (size_t)O * sizeof(float));
    dnnl_memory_t X = input(&c, &e->x, &e->w_x, x);
    dnnl_memory_t DYw = share_dy ? DY : input(&c, &e->y, &e->w_dy, dy), DWu;
    dnnl_memory_t DW = output(&c, &e->w, &e->w_dw, tw, &DWu);
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, X},
                            {DNNL_ARG_DIFF_DST, DYw},
                            {DNNL_ARG_DIFF_WEIGHTS, DW},
                            {DNNL_ARG_DIFF_BIAS, dnnl_call_mem(&c, &e->b, tb)}};
    dnnl_call_exec(&c, e->bwd_weights, 4, a, "backward-weights convolution");
    finish(&c, &e->w_dw, DW, DWu);
    if (c.s == dnnl_success) {
      if (dw)
        for (size_t i = 0; i < nw; i++) dw[i] += tw[i];
      if (db)
        for (int64_t o = 0; o < O; o++) db[o] += tb[o];
    }
  }
  return dnnl_call_end(&c, op);
}
