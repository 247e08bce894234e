/*
 * Weak defaults for every backend kernel: a backend that lacks an op reports it as unsupported
 * (ggml's supports_op) instead of failing to link. A backend's own definition overrides these.
 */
#include "backend.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"

#define UNSUPPORTED(name) \
  return gc_set_error(GC_ERR_UNSUPPORTED, "%s is not supported by the %s backend", name, be_name())

__attribute__((weak)) gc_status be_fill(be_ctx *bc, float *y, int64_t n, float value) {
  UNSUPPORTED("fill");
}

__attribute__((weak)) gc_status be_copy(be_ctx *bc, float *y, const float *x, int64_t n) {
  UNSUPPORTED("copy");
}

__attribute__((weak)) gc_status be_axpby(be_ctx *bc, float *y, float alpha, const float *x, float beta, int64_t n) {
  UNSUPPORTED("axpby");
}

__attribute__((weak)) gc_status be_add_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t R, int64_t S) {
  UNSUPPORTED("add_forward");
}

__attribute__((weak)) gc_status be_add_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t R, int64_t S) {
  UNSUPPORTED("add_backward");
}

__attribute__((weak)) gc_status be_transpose(be_ctx *bc, float *y, const float *x, int64_t B, int64_t M, int64_t N) {
  UNSUPPORTED("transpose");
}

__attribute__((weak)) gc_status be_concat_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t B, int64_t Ca, int64_t Cb, int64_t S) {
  UNSUPPORTED("concat_forward");
}

__attribute__((weak)) gc_status be_concat_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t B, int64_t Ca, int64_t Cb, int64_t S) {
  UNSUPPORTED("concat_backward");
}

__attribute__((weak)) gc_status be_upsample2x_forward(be_ctx *bc, float *y, const float *x, int64_t P, int64_t H, int64_t W) {
  UNSUPPORTED("upsample2x_forward");
}

__attribute__((weak)) gc_status be_upsample2x_backward(be_ctx *bc, float *dx, const float *dy, int64_t P, int64_t H, int64_t W) {
  UNSUPPORTED("upsample2x_backward");
}

__attribute__((weak)) gc_status be_conv2d_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b, int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  UNSUPPORTED("conv2d_forward");
}

__attribute__((weak)) gc_status be_conv2d_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  UNSUPPORTED("conv2d_backward");
}

__attribute__((weak)) gc_status be_linear_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b, int64_t N, int64_t I, int64_t O) {
  UNSUPPORTED("linear_forward");
}

__attribute__((weak)) gc_status be_linear_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int64_t N, int64_t I, int64_t O) {
  UNSUPPORTED("linear_backward");
}

__attribute__((weak)) gc_status be_group_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta, int64_t B, int64_t C, int64_t S, int64_t G, float eps) {
  UNSUPPORTED("group_norm_forward");
}

__attribute__((weak)) gc_status be_group_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *mean, const float *rstd, const float *gamma, int64_t B, int64_t C, int64_t S, int64_t G) {
  UNSUPPORTED("group_norm_backward");
}

__attribute__((weak)) gc_status be_layer_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta, int64_t N, int64_t D, float eps) {
  UNSUPPORTED("layer_norm_forward");
}

__attribute__((weak)) gc_status be_layer_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *mean, const float *rstd, const float *gamma, int64_t N, int64_t D) {
  UNSUPPORTED("layer_norm_backward");
}

__attribute__((weak)) gc_status be_activation_forward(be_ctx *bc, gc_activation kind, float *y, const float *x, int64_t n) {
  UNSUPPORTED("activation_forward");
}

__attribute__((weak)) gc_status be_activation_backward(be_ctx *bc, gc_activation kind, float *dx, const float *dy, const float *x, int64_t n) {
  UNSUPPORTED("activation_backward");
}

__attribute__((weak)) gc_status be_geglu_forward(be_ctx *bc, float *y, const float *x, int64_t N, int64_t D) {
  UNSUPPORTED("geglu_forward");
}

__attribute__((weak)) gc_status be_geglu_backward(be_ctx *bc, float *dx, const float *dy, const float *x, int64_t N, int64_t D) {
  UNSUPPORTED("geglu_backward");
}

__attribute__((weak)) gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q, const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dh, int causal, float scale) {
  UNSUPPORTED("attention_forward");
}

__attribute__((weak)) gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v, const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dh, float scale) {
  UNSUPPORTED("attention_backward");
}

__attribute__((weak)) gc_status be_embedding_forward(be_ctx *bc, float *y, const int32_t *ids, const float *tok, const float *pos, int64_t B, int64_t L, int64_t D, int64_t V) {
  UNSUPPORTED("embedding_forward");
}

__attribute__((weak)) gc_status be_embedding_backward(be_ctx *bc, float *dtok, float *dpos, const float *dy, const int32_t *ids, int64_t B, int64_t L, int64_t D, int64_t V) {
  UNSUPPORTED("embedding_backward");
}

__attribute__((weak)) gc_status be_check_ids(be_ctx *bc, const int32_t *ids, int64_t n, int64_t V, int64_t *bad_index, int32_t *bad_value) {
  UNSUPPORTED("check_ids");
}

__attribute__((weak)) gc_status be_timestep_embedding_forward(be_ctx *bc, float *y, const float *t, int64_t B, int64_t D, int flip_sin_to_cos, float freq_shift, float max_period) {
  UNSUPPORTED("timestep_embedding_forward");
}

__attribute__((weak)) gc_status be_timestep_embedding_backward(be_ctx *bc, float *dt, const float *dy, const float *t, int64_t B, int64_t D, int flip_sin_to_cos, float freq_shift, float max_period) {
  UNSUPPORTED("timestep_embedding_backward");
}

__attribute__((weak)) gc_status be_mse_forward(be_ctx *bc, float *loss, const float *a, const float *b, const float *weights, int64_t B, int64_t M) {
  UNSUPPORTED("mse_forward");
}

__attribute__((weak)) gc_status be_mse_backward(be_ctx *bc, float *da, float *db, float dloss, const float *a, const float *b, const float *weights, int64_t B, int64_t M) {
  UNSUPPORTED("mse_backward");
}

__attribute__((weak)) gc_status be_ddim_step(be_ctx *bc, float *x_prev, float *log_prob, float *mean, const float *x_t, const float *eps, const float *noise, const gc_ddim_coef *coef, float clip_x0, int64_t B, int64_t M) {
  UNSUPPORTED("ddim_step");
}

__attribute__((weak)) gc_status be_ddim_step_log_prob_backward(be_ctx *bc, float *deps, const float *dlog_prob, const float *x_prev, const float *x_t, const float *eps, const gc_ddim_coef *coef, float clip_x0, int64_t B, int64_t M) {
  UNSUPPORTED("ddim_step_log_prob_backward");
}

__attribute__((weak)) gc_status be_ddpo_is_forward(be_ctx *bc, float *loss, float *stats, const float *log_prob, const float *old_log_prob, const float *advantages, int64_t N, float clip_range, float adv_clip_max) {
  UNSUPPORTED("ddpo_is_forward");
}

__attribute__((weak)) gc_status be_ddpo_is_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *log_prob, const float *old_log_prob, const float *advantages, int64_t N, float clip_range, float adv_clip_max) {
  UNSUPPORTED("ddpo_is_backward");
}

__attribute__((weak)) gc_status be_ddpo_sf_forward(be_ctx *bc, float *loss, const float *log_prob, const float *advantages, int64_t N, float adv_clip_max) {
  UNSUPPORTED("ddpo_sf_forward");
}

__attribute__((weak)) gc_status be_ddpo_sf_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *advantages, int64_t N, float adv_clip_max) {
  UNSUPPORTED("ddpo_sf_backward");
}

__attribute__((weak)) gc_status be_adamw_step(be_ctx *bc, float *params, const float *grads, float *m, float *v, int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  UNSUPPORTED("adamw_step");
}

__attribute__((weak)) gc_status be_sum_squares(be_ctx *bc, const float *x, int64_t n, double *out) {
  UNSUPPORTED("sum_squares");
}

__attribute__((weak)) gc_status be_scale(be_ctx *bc, float *x, int64_t n, float factor) {
  UNSUPPORTED("scale");
}

__attribute__((weak)) gc_status be_randn(be_ctx *bc, float *y, int64_t n, uint64_t seed, uint64_t offset) {
  UNSUPPORTED("randn");
}
