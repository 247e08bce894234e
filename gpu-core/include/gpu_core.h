/*
 * gpu-core: the numeric engine of the DDPO system. One C ABI, two backends built as separate
 * shared libraries (libgpucore_cpu.so: C11 + OpenMP + CBLAS; libgpucore_cuda.so: cuBLAS +
 * cuDNN). The host chooses a backend by loading one of them.
 *
 * Conventions
 * - Every call returns a gc_status; on failure gc_last_error() gives a message (thread-local).
 *   Nothing in the library aborts or exits the host process.
 * - Handles (context, arena, tensor) are opaque 64-bit integers below 2^53 (safe as JS numbers).
 *   0 means "none" where an argument is optional. A closed, stale or foreign handle is an error.
 * - Tensor memory belongs to the backend (host RAM for CPU, device memory for CUDA). The host
 *   moves data only through gc_tensor_write / gc_tensor_read; it never aliases tensor memory.
 * - Tensors are dense, row-major, up to GC_MAX_DIMS dims. Images are NCHW.
 * - A tensor is either a fresh allocation, a view (a contiguous range of another tensor's storage,
 *   e.g. one parameter inside the flat parameter buffer), or carved from an arena. Arena tensors
 *   become invalid (stale handles) when their arena is reset.
 * - Ops: one function per op and direction. Forward outputs and activation gradients are written
 *   (=); parameter gradients (dw, db, dgamma, ...) accumulate (+=). Optional outputs may be 0.
 * - Small per-call scalars (alphas of a DDIM step, result norms) travel in host memory.
 */
#ifndef GPU_CORE_H
#define GPU_CORE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GC_ABI_VERSION 1
#define GC_MAX_DIMS 6

typedef enum gc_status {
  GC_OK = 0,
  GC_ERR_INVALID_ARGUMENT = 1, /* bad scalar argument, out-of-range id, NaN where forbidden */
  GC_ERR_SHAPE = 2,            /* tensor shapes or sizes do not fit the op */
  GC_ERR_HANDLE = 3,           /* closed, stale (arena reset) or foreign handle */
  GC_ERR_OUT_OF_MEMORY = 4,    /* allocation cannot be satisfied */
  GC_ERR_UNSUPPORTED = 5,      /* op or option not implemented by this backend */
  GC_ERR_BACKEND = 6           /* backend runtime failure (CUDA error, ...) */
} gc_status;

typedef enum gc_dtype { GC_F32 = 0, GC_I32 = 1 } gc_dtype;

typedef enum gc_activation {
  GC_ACT_SILU = 0,       /* x * sigmoid(x) */
  GC_ACT_GELU = 1,       /* 0.5 x (1 + erf(x / sqrt 2)), PyTorch approximate='none' */
  GC_ACT_GELU_TANH = 2,  /* PyTorch approximate='tanh' */
  GC_ACT_QUICK_GELU = 3  /* x * sigmoid(1.702 x), CLIP */
} gc_activation;

typedef int64_t gc_handle;

/* ---- library, context, memory ---------------------------------------------------------- */

int32_t gc_abi_version(void);
const char *gc_backend_name(void); /* "cpu" or "cuda" */
const char *gc_last_error(void);   /* message of the last failing call on this thread */

/* Backend context. options: NULL or "" for defaults; "device=N" selects a GPU on CUDA. */
gc_status gc_ctx_create(const char *options, gc_handle *out_ctx);
gc_status gc_ctx_destroy(gc_handle ctx); /* frees every tensor and arena of the context */
gc_status gc_ctx_synchronize(gc_handle ctx);
/* Bytes of tensor memory the context holds now and at most so far (arenas included). */
gc_status gc_ctx_memory(gc_handle ctx, int64_t *out_in_use, int64_t *out_peak);

/* Arena for activations: bump allocation, grows by chunks; reset invalidates its tensors. */
gc_status gc_arena_create(gc_handle ctx, int64_t initial_bytes, gc_handle *out_arena);
gc_status gc_arena_reset(gc_handle arena);
gc_status gc_arena_destroy(gc_handle arena);

/* New tensor (arena may be 0 for an own allocation). Contents are undefined. */
gc_status gc_tensor_new(gc_handle ctx, gc_handle arena, gc_dtype dtype, int32_t ndim,
                        const int64_t *dims, gc_handle *out_tensor);
/* View of numel(dims) elements of src's storage starting at element offset (within src). */
gc_status gc_tensor_view(gc_handle src, int64_t offset, int32_t ndim, const int64_t *dims,
                         gc_handle *out_tensor);
gc_status gc_tensor_free(gc_handle tensor);
gc_status gc_tensor_info(gc_handle tensor, int32_t *out_dtype, int32_t *out_ndim,
                         int64_t *out_dims /* GC_MAX_DIMS */);
/* Copy nbytes between host and the tensor, starting at element offset. */
gc_status gc_tensor_write(gc_handle tensor, int64_t offset, const void *host, int64_t nbytes);
gc_status gc_tensor_read(gc_handle tensor, int64_t offset, void *host, int64_t nbytes);

/* ---- elementwise and data movement --------------------------------------------------- */

gc_status gc_fill(gc_handle ctx, gc_handle y, float value);
gc_status gc_copy(gc_handle ctx, gc_handle y, gc_handle x); /* same numel, shapes may differ */
/* y = alpha * x + beta * y (same numel). */
gc_status gc_axpby(gc_handle ctx, gc_handle y, float alpha, gc_handle x, float beta);
/* y = a + b. b has a's shape, or b's dims are a leading prefix of a's dims and b broadcasts
 * over the rest (a time-embedding bias [B,C] onto [B,C,H,W]). */
gc_status gc_add_forward(gc_handle ctx, gc_handle y, gc_handle a, gc_handle b);
/* da = dy and db = dy summed over the broadcast dims: both activation gradients, written (=). */
gc_status gc_add_backward(gc_handle ctx, gc_handle da, gc_handle db, gc_handle dy);
/* y[B,N,M] = transpose of x[B,M,N] over the last two dims (NCHW <-> tokens). */
gc_status gc_transpose_forward(gc_handle ctx, gc_handle y, gc_handle x);
gc_status gc_transpose_backward(gc_handle ctx, gc_handle dx, gc_handle dy);
/* y[B, Ca+Cb, S...] = concat(a[B,Ca,S...], b[B,Cb,S...]) along dim 1. */
gc_status gc_concat_forward(gc_handle ctx, gc_handle y, gc_handle a, gc_handle b);
gc_status gc_concat_backward(gc_handle ctx, gc_handle da, gc_handle db, gc_handle dy);
/* y[B,C,2H,2W] = nearest-neighbour 2x upsample of x[B,C,H,W]. */
gc_status gc_upsample2x_forward(gc_handle ctx, gc_handle y, gc_handle x);
gc_status gc_upsample2x_backward(gc_handle ctx, gc_handle dx, gc_handle dy);

/* ---- layers ----------------------------------------------------------------------------- */

/* y[B,O,Ho,Wo] = conv(x[B,C,H,W], w[O,C,K,K]) + b[O]; Ho = (H + 2 pad - K) / stride + 1. */
gc_status gc_conv2d_forward(gc_handle ctx, gc_handle y, gc_handle x, gc_handle w, gc_handle b,
                            int32_t stride, int32_t pad);
gc_status gc_conv2d_backward(gc_handle ctx, gc_handle dx, gc_handle dw, gc_handle db,
                             gc_handle dy, gc_handle x, gc_handle w, int32_t stride, int32_t pad);

/* y[N..,O] = x[N..,I] w[O,I]^T + b[O]; leading dims are flattened. */
gc_status gc_linear_forward(gc_handle ctx, gc_handle y, gc_handle x, gc_handle w, gc_handle b);
gc_status gc_linear_backward(gc_handle ctx, gc_handle dx, gc_handle dw, gc_handle db,
                             gc_handle dy, gc_handle x, gc_handle w);

/* Group norm over x[B,C,S...] with G groups; saves mean[B,G] and rstd[B,G] for backward.
 * gamma/beta [C] optional (affine). */
gc_status gc_group_norm_forward(gc_handle ctx, gc_handle y, gc_handle mean, gc_handle rstd,
                                gc_handle x, gc_handle gamma, gc_handle beta, int32_t groups,
                                float eps);
gc_status gc_group_norm_backward(gc_handle ctx, gc_handle dx, gc_handle dgamma, gc_handle dbeta,
                                 gc_handle dy, gc_handle x, gc_handle mean, gc_handle rstd,
                                 gc_handle gamma, int32_t groups);

/* Layer norm over the last dim D of x[N..,D]; mean[N], rstd[N]; gamma/beta [D] optional. */
gc_status gc_layer_norm_forward(gc_handle ctx, gc_handle y, gc_handle mean, gc_handle rstd,
                                gc_handle x, gc_handle gamma, gc_handle beta, float eps);
gc_status gc_layer_norm_backward(gc_handle ctx, gc_handle dx, gc_handle dgamma, gc_handle dbeta,
                                 gc_handle dy, gc_handle x, gc_handle mean, gc_handle rstd,
                                 gc_handle gamma);

gc_status gc_activation_forward(gc_handle ctx, gc_activation kind, gc_handle y, gc_handle x);
gc_status gc_activation_backward(gc_handle ctx, gc_activation kind, gc_handle dx, gc_handle dy,
                                 gc_handle x);

/* GEGLU (diffusers): x[N..,2D] = [h | g]; y[N..,D] = h * gelu(g) (erf form). */
gc_status gc_geglu_forward(gc_handle ctx, gc_handle y, gc_handle x);
gc_status gc_geglu_backward(gc_handle ctx, gc_handle dx, gc_handle dy, gc_handle x);

/* Multi-head scaled dot-product attention. q[B,Tq,H*Dh], k,v[B,Tk,H*Dh], out[B,Tq,H*Dh];
 * probs[B,H,Tq,Tk] keeps the softmax for backward. scale <= 0 means 1/sqrt(Dh). causal masks
 * key j > query i (requires Tq == Tk). */
gc_status gc_attention_forward(gc_handle ctx, gc_handle out, gc_handle probs, gc_handle q,
                               gc_handle k, gc_handle v, int32_t heads, int32_t causal,
                               float scale);
gc_status gc_attention_backward(gc_handle ctx, gc_handle dq, gc_handle dk, gc_handle dv,
                                gc_handle dout, gc_handle q, gc_handle k, gc_handle v,
                                gc_handle probs, int32_t heads, float scale);

/* y[B,L,D] = tok[ids[b,l]] + pos[l] (pos[P,D] optional, P >= L); ids is GC_I32 [B,L]. */
gc_status gc_embedding_forward(gc_handle ctx, gc_handle y, gc_handle ids, gc_handle tok,
                               gc_handle pos);
gc_status gc_embedding_backward(gc_handle ctx, gc_handle dtok, gc_handle dpos, gc_handle dy,
                                gc_handle ids);

/* Sinusoidal timestep embedding (diffusers get_timestep_embedding): t[B] -> y[B,D].
 * half = D/2, freq_j = exp(-ln(max_period) j / (half - freq_shift)), y = [sin(t f), cos(t f)]
 * ([cos, sin] when flip_sin_to_cos); odd D gets a zero last column. */
gc_status gc_timestep_embedding_forward(gc_handle ctx, gc_handle y, gc_handle t,
                                        int32_t flip_sin_to_cos, float freq_shift,
                                        float max_period);
gc_status gc_timestep_embedding_backward(gc_handle ctx, gc_handle dt, gc_handle dy, gc_handle t,
                                         int32_t flip_sin_to_cos, float freq_shift,
                                         float max_period);

/* loss[1] = (1/B) sum_b w[b] * mean_{i}((a[b,i] - b[b,i])^2); weights[B] optional (all 1). */
gc_status gc_mse_forward(gc_handle ctx, gc_handle loss, gc_handle a, gc_handle b,
                         gc_handle weights);
/* da = dloss * dloss/da, db = -da (each optional, written). */
gc_status gc_mse_backward(gc_handle ctx, gc_handle da, gc_handle db, float dloss, gc_handle a,
                          gc_handle b, gc_handle weights);

/* ---- diffusion and DDPO ----------------------------------------------------------------- */

/* One DDIM step (docs/DESIGN.md §3.2), per-sample alphas in host memory (length B), with
 * eta > 0 finite and 0 < alpha_t < alpha_prev <= 1 (so sigma > 0: the log-prob needs it):
 * x0 = (x_t - sqrt(1-a) eps) / sqrt(a), clipped to [-clip_x0, clip_x0] when clip_x0 > 0;
 * sigma = eta sqrt((1-a')/(1-a)) sqrt(1 - a/a'); mean = sqrt(a') x0 + sqrt(1-a'-sigma^2) eps;
 * log_prob[b] = mean over non-batch elements of the Gaussian log-density of x_prev.
 * Sampling form: x_prev = mean + sigma * noise is written. */
gc_status gc_ddim_step_sample(gc_handle ctx, gc_handle x_prev, gc_handle log_prob, gc_handle mean,
                              gc_handle x_t, gc_handle eps, gc_handle noise,
                              const double *alpha_t, const double *alpha_prev, float eta,
                              float clip_x0);
/* Given form: log_prob[B] (and optionally mean) of a given x_prev. */
gc_status gc_ddim_step_log_prob(gc_handle ctx, gc_handle log_prob, gc_handle mean,
                                gc_handle x_prev, gc_handle x_t, gc_handle eps,
                                const double *alpha_t, const double *alpha_prev, float eta,
                                float clip_x0);
/* deps (=) from dlog_prob[B], through mean only (x_prev is data, not a function of eps). */
gc_status gc_ddim_step_log_prob_backward(gc_handle ctx, gc_handle deps, gc_handle dlog_prob,
                                         gc_handle x_prev, gc_handle x_t, gc_handle eps,
                                         const double *alpha_t, const double *alpha_prev,
                                         float eta, float clip_x0);

/* DDPO_IS (PPO clip) over N (sample, timestep) pairs, clip_range >= 0 and adv_clip_max > 0
 * (finite): A = clip(adv, +-adv_clip_max),
 * r = exp(lp - old), loss[1] = mean(max(-A r, -A clip(r, 1-c, 1+c))).
 * stats[2] optional: approx_kl = mean((lp - old)^2)/2, clip_fraction = mean(|r - 1| > c). */
gc_status gc_ddpo_is_forward(gc_handle ctx, gc_handle loss, gc_handle stats, gc_handle log_prob,
                             gc_handle old_log_prob, gc_handle advantages, float clip_range,
                             float adv_clip_max);
gc_status gc_ddpo_is_backward(gc_handle ctx, gc_handle dlog_prob, float dloss,
                              gc_handle log_prob, gc_handle old_log_prob, gc_handle advantages,
                              float clip_range, float adv_clip_max);
/* DDPO_SF: loss[1] = mean(-A lp), A clipped as above. */
gc_status gc_ddpo_sf_forward(gc_handle ctx, gc_handle loss, gc_handle log_prob,
                             gc_handle advantages, float adv_clip_max);
gc_status gc_ddpo_sf_backward(gc_handle ctx, gc_handle dlog_prob, float dloss,
                              gc_handle advantages, float adv_clip_max);

/* ---- optimisation and randomness ------------------------------------------------------ */

/* AdamW (PyTorch semantics, decoupled decay) over flat buffers of equal numel; step >= 1. */
gc_status gc_adamw_step(gc_handle ctx, gc_handle params, gc_handle grads, gc_handle m,
                        gc_handle v, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t step);
/* out_norm = ||grads||_2 (before clipping); when max_norm > 0 and the norm exceeds it, grads
 * are scaled by max_norm / (norm + 1e-6) (torch.nn.utils.clip_grad_norm_). */
gc_status gc_clip_grad_norm(gc_handle ctx, gc_handle grads, float max_norm, double *out_norm);
/* Standard normal noise from Philox-4x32-10 keyed by seed: element i of y is normal number
 * (offset + i) of the stream, identical on every backend. */
gc_status gc_randn(gc_handle ctx, gc_handle y, uint64_t seed, uint64_t offset);

#ifdef __cplusplus
}
#endif

#endif /* GPU_CORE_H */
