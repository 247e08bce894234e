/*
 * The contract between the shared front end (core/abi.c: handles, shape checks, errors) and a
 * backend (cpu/ or cuda/). The front end validates every handle and shape before calling a
 * be_* kernel, so kernels take raw pointers into backend memory and plain sizes; they return
 * GC_OK, or set a message with gc_set_error() and return a status (never abort).
 *
 * Shapes are given per argument; all arrays are dense row-major fp32 unless stated.
 * "+=" marks parameter gradients that accumulate; every other output is written.
 * An optional pointer may be NULL.
 */
#ifndef GPU_CORE_BACKEND_H
#define GPU_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../include/gpu_core.h"
#include "ddim.h"

/* Records a printf-style message for gc_last_error() on this thread; returns status. */
gc_status gc_set_error(gc_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef struct be_ctx be_ctx; /* backend state: scratch buffers, BLAS/cuDNN handles */

const char *be_name(void);
gc_status be_ctx_create(const char *options, be_ctx **out);
void be_ctx_destroy(be_ctx *bc);
gc_status be_synchronize(be_ctx *bc);

/* Backend memory. be_alloc returns NULL (with an error set) when it cannot allocate. */
void *be_alloc(be_ctx *bc, size_t bytes);
void be_free(be_ctx *bc, void *p);
gc_status be_upload(be_ctx *bc, void *dst, const void *host, size_t bytes);
gc_status be_download(be_ctx *bc, void *host, const void *src, size_t bytes);

/* ---- elementwise and data movement (n = element count) ---- */
gc_status be_fill(be_ctx *bc, float *y, int64_t n, float value);
gc_status be_copy(be_ctx *bc, float *y, const float *x, int64_t n);
gc_status be_axpby(be_ctx *bc, float *y, float alpha, const float *x, float beta, int64_t n);
/* y[R,S] = a[R,S] + b[R] broadcast over S (S == 1 for same-shape add). */
gc_status be_add_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t R,
                         int64_t S);
/* da[R,S] = dy; db[R] = sum_s dy[r,s]. */
gc_status be_add_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t R, int64_t S);
/* y[B,N,M] = x[B,M,N]^T */
gc_status be_transpose(be_ctx *bc, float *y, const float *x, int64_t B, int64_t M, int64_t N);
/* y[B,Ca+Cb,S] from a[B,Ca,S], b[B,Cb,S] */
gc_status be_concat_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t B,
                            int64_t Ca, int64_t Cb, int64_t S);
gc_status be_concat_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t B,
                             int64_t Ca, int64_t Cb, int64_t S);
/* y[P,2H,2W] from x[P,H,W] (P = B*C) */
gc_status be_upsample2x_forward(be_ctx *bc, float *y, const float *x, int64_t P, int64_t H,
                                int64_t W);
gc_status be_upsample2x_backward(be_ctx *bc, float *dx, const float *dy, int64_t P, int64_t H,
                                 int64_t W);

/* ---- layers ---- */
/* y[B,O,Ho,Wo], x[B,C,H,W], w[O,C,K,K], b[O] */
gc_status be_conv2d_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                            int64_t stride, int64_t pad, int64_t Ho, int64_t Wo);
/* dx (=), dw (+=), db (+=) */
gc_status be_conv2d_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t B, int64_t C, int64_t H,
                             int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad,
                             int64_t Ho, int64_t Wo);
/* y[N,O] = x[N,I] w[O,I]^T + b[O] */
gc_status be_linear_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t I, int64_t O);
/* dx (=), dw (+=), db (+=) */
gc_status be_linear_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t N, int64_t I, int64_t O);
/* x[B,C,S], groups G; mean, rstd [B,G]; gamma, beta [C] optional */
gc_status be_group_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t B, int64_t C,
                                int64_t S, int64_t G, float eps);
gc_status be_group_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int64_t B, int64_t C,
                                 int64_t S, int64_t G);
/* x[N,D]; mean, rstd [N]; gamma, beta [D] optional */
gc_status be_layer_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t N, int64_t D,
                                float eps);
gc_status be_layer_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int64_t N, int64_t D);
gc_status be_activation_forward(be_ctx *bc, gc_activation kind, float *y, const float *x,
                                int64_t n);
gc_status be_activation_backward(be_ctx *bc, gc_activation kind, float *dx, const float *dy,
                                 const float *x, int64_t n);
/* x[N,2D] -> y[N,D] */
gc_status be_geglu_forward(be_ctx *bc, float *y, const float *x, int64_t N, int64_t D);
gc_status be_geglu_backward(be_ctx *bc, float *dx, const float *dy, const float *x, int64_t N,
                            int64_t D);
/* q[B,Tq,H*Dh], k,v[B,Tk,H*Dh], out[B,Tq,H*Dh], probs[B,H,Tq,Tk] */
gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q,
                               const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t H, int64_t Dh, int causal, float scale);
/* dq, dk, dv written (each optional) */
gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v,
                                const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                int64_t Dh, float scale);
/* y[B,L,D]; ids int32 [B,L] (already range-checked against V); tok[V,D]; pos[P,D] optional */
gc_status be_embedding_forward(be_ctx *bc, float *y, const int32_t *ids, const float *tok,
                               const float *pos, int64_t B, int64_t L, int64_t D, int64_t V);
/* dtok (+=), dpos (+=) */
gc_status be_embedding_backward(be_ctx *bc, float *dtok, float *dpos, const float *dy,
                                const int32_t *ids, int64_t B, int64_t L, int64_t D, int64_t V);
/* Backend check that every id lies in [0, V); writes the first bad index or -1. */
gc_status be_check_ids(be_ctx *bc, const int32_t *ids, int64_t n, int64_t V, int64_t *bad_index,
                       int32_t *bad_value);
gc_status be_timestep_embedding_forward(be_ctx *bc, float *y, const float *t, int64_t B,
                                        int64_t D, int flip_sin_to_cos, float freq_shift,
                                        float max_period);
gc_status be_timestep_embedding_backward(be_ctx *bc, float *dt, const float *dy, const float *t,
                                         int64_t B, int64_t D, int flip_sin_to_cos,
                                         float freq_shift, float max_period);
/* a, b [B,M]; loss[1]; weights[B] optional */
gc_status be_mse_forward(be_ctx *bc, float *loss, const float *a, const float *b,
                         const float *weights, int64_t B, int64_t M);
gc_status be_mse_backward(be_ctx *bc, float *da, float *db, float dloss, const float *a,
                          const float *b, const float *weights, int64_t B, int64_t M);

/* ---- diffusion and DDPO ---- */
/* x_t, eps, noise, x_prev, mean [B,M]; log_prob [B]; coef host [B], validated by core/ops.c
 * (sigma > 0); clip_x0 > 0 clips x0 to [-clip_x0, clip_x0], <= 0 does not; B, M > 0.
 * Sampling form when noise != NULL (x_prev written), given form otherwise (x_prev read). */
gc_status be_ddim_step(be_ctx *bc, float *x_prev, float *log_prob, float *mean, const float *x_t,
                       const float *eps, const float *noise, const gc_ddim_coef *coef,
                       float clip_x0, int64_t B, int64_t M);
/* deps [B,M] (=) from dlog_prob [B] */
gc_status be_ddim_step_log_prob_backward(be_ctx *bc, float *deps, const float *dlog_prob,
                                         const float *x_prev, const float *x_t, const float *eps,
                                         const gc_ddim_coef *coef, float clip_x0, int64_t B,
                                         int64_t M);
/* log_prob, old_log_prob, advantages [N]; loss[1]; stats[2] optional; clip_range >= 0
 * and adv_clip_max > 0, both finite (checked by core/ops.c) */
gc_status be_ddpo_is_forward(be_ctx *bc, float *loss, float *stats, const float *log_prob,
                             const float *old_log_prob, const float *advantages, int64_t N,
                             float clip_range, float adv_clip_max);
gc_status be_ddpo_is_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *log_prob,
                              const float *old_log_prob, const float *advantages, int64_t N,
                              float clip_range, float adv_clip_max);
gc_status be_ddpo_sf_forward(be_ctx *bc, float *loss, const float *log_prob,
                             const float *advantages, int64_t N, float adv_clip_max);
gc_status be_ddpo_sf_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *advantages,
                              int64_t N, float adv_clip_max);

/* ---- optimisation and randomness ---- */
gc_status be_adamw_step(be_ctx *bc, float *params, const float *grads, float *m, float *v,
                        int64_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t step);
/* sum of squares in double */
gc_status be_sum_squares(be_ctx *bc, const float *x, int64_t n, double *out);
gc_status be_scale(be_ctx *bc, float *x, int64_t n, float factor);
/* Philox-4x32-10 normals, see philox.h for the exact mapping shared by both backends. */
gc_status be_randn(be_ctx *bc, float *y, int64_t n, uint64_t seed, uint64_t offset);

#endif /* GPU_CORE_BACKEND_H */
