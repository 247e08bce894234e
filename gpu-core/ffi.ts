// GENERATED from gpu-core/include/gc_api.def by gpu-core/gen-ffi.ts: do not edit. Regenerate with
// `bun run gpu-core/gen-ffi.ts` after changing the list (test/gpu-core/ffi.test.ts fails while
// this file is stale). The one bun:ffi symbol table of gpu-core: handles are int64 values below
// 2^53 passed as JS numbers; the ops return a gc_status (i32).
import { dlopen, FFIType } from "bun:ffi";

const { i32, i64, u64, f32, ptr, cstring } = FFIType;
const H = i64; // gc_handle

export const symbols = {
  // library, context, memory
  gc_abi_version: { args: [], returns: i32 },
  gc_backend_name: { args: [], returns: cstring },
  gc_last_error: { args: [], returns: cstring },
  gc_ctx_create: { args: [ptr, ptr], returns: i32 },
  gc_ctx_destroy: { args: [H], returns: i32 },
  gc_ctx_synchronize: { args: [H], returns: i32 },
  gc_ctx_memory: { args: [H, ptr, ptr], returns: i32 },
  gc_arena_create: { args: [H, i64, ptr], returns: i32 },
  gc_arena_reset: { args: [H], returns: i32 },
  gc_arena_destroy: { args: [H], returns: i32 },
  gc_tensor_new: { args: [H, H, i32, i32, ptr, ptr], returns: i32 },
  gc_tensor_view: { args: [H, i64, i32, ptr, ptr], returns: i32 },
  gc_tensor_free: { args: [H], returns: i32 },
  gc_tensor_info: { args: [H, ptr, ptr, ptr], returns: i32 },
  gc_tensor_write: { args: [H, i64, ptr, i64], returns: i32 },
  gc_tensor_read: { args: [H, i64, ptr, i64], returns: i32 },

  // elementwise and data movement
  gc_fill: { args: [H, H, f32], returns: i32 },
  gc_copy: { args: [H, H, H], returns: i32 },
  gc_axpby: { args: [H, H, f32, H, f32], returns: i32 },
  gc_add_forward: { args: [H, H, H, H], returns: i32 },
  gc_add_backward: { args: [H, H, H, H], returns: i32 },
  gc_transpose_forward: { args: [H, H, H], returns: i32 },
  gc_transpose_backward: { args: [H, H, H], returns: i32 },
  gc_concat_forward: { args: [H, H, H, H], returns: i32 },
  gc_concat_backward: { args: [H, H, H, H], returns: i32 },
  gc_upsample2x_forward: { args: [H, H, H, i32], returns: i32 },
  gc_upsample2x_backward: { args: [H, H, H, i32], returns: i32 },

  // layers
  gc_conv2d_forward: { args: [H, H, H, H, H, i32, i32, i32], returns: i32 },
  gc_conv2d_backward: { args: [H, H, H, H, H, H, H, i32, i32, i32], returns: i32 },
  gc_linear_forward: { args: [H, H, H, H, H, i32], returns: i32 },
  gc_linear_backward: { args: [H, H, H, H, H, H, H, i32], returns: i32 },
  gc_group_norm_forward: { args: [H, H, H, H, H, H, H, i32, f32, i32, i32], returns: i32 },
  gc_group_norm_backward: { args: [H, H, H, H, H, H, H, H, H, H, i32, i32, i32], returns: i32 },
  gc_layer_norm_forward: { args: [H, H, H, H, H, H, H, f32], returns: i32 },
  gc_layer_norm_backward: { args: [H, H, H, H, H, H, H, H, H], returns: i32 },
  gc_activation_forward: { args: [H, i32, H, H], returns: i32 },
  gc_activation_backward: { args: [H, i32, H, H, H], returns: i32 },
  gc_geglu_forward: { args: [H, H, H], returns: i32 },
  gc_geglu_backward: { args: [H, H, H, H], returns: i32 },
  gc_geglu_feedforward_forward: { args: [H, H, H, H, H, H, H, H, H], returns: i32 },
  gc_attention_forward: { args: [H, H, H, H, H, H, i32, i32, f32], returns: i32 },
  gc_attention_backward: { args: [H, H, H, H, H, H, H, H, H, i32, f32], returns: i32 },
  gc_embedding_forward: { args: [H, H, H, H, H], returns: i32 },
  gc_embedding_backward: { args: [H, H, H, H, H], returns: i32 },
  gc_timestep_embedding_forward: { args: [H, H, H, i32, f32, f32], returns: i32 },
  gc_timestep_embedding_backward: { args: [H, H, H, H, i32, f32, f32], returns: i32 },
  gc_mse_forward: { args: [H, H, H, H, H], returns: i32 },
  gc_mse_backward: { args: [H, H, H, f32, H, H, H], returns: i32 },

  // diffusion and DDPO
  gc_ddim_step_sample: { args: [H, H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddim_step_log_prob: { args: [H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddim_step_log_prob_backward: { args: [H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddpo_is_forward: { args: [H, H, H, H, H, H, f32, f32], returns: i32 },
  gc_ddpo_is_backward: { args: [H, H, f32, H, H, H, f32, f32], returns: i32 },
  gc_ddpo_sf_forward: { args: [H, H, H, H, f32], returns: i32 },
  gc_ddpo_sf_backward: { args: [H, H, f32, H, f32], returns: i32 },

  // optimisation and randomness
  gc_adamw_step: { args: [H, H, H, H, H, f32, f32, f32, f32, f32, i64], returns: i32 },
  gc_clip_grad_norm: { args: [H, H, f32, ptr], returns: i32 },
  gc_randn: { args: [H, H, u64, u64], returns: i32 },
} as const;

/**
 * The parameters after `ctx` of every call that takes a context first, named as in C, typed as
 * the Engine passes them: T for a gc_handle (a tensor, or none where the C API allows 0).
 */
export interface ContextCalls<T> {
  gc_ctx_destroy: [];
  gc_ctx_synchronize: [];
  gc_ctx_memory: [outInUse: BigInt64Array, outPeak: BigInt64Array];
  gc_arena_create: [initialBytes: number, outArena: BigInt64Array];
  gc_tensor_new: [arena: T, dtype: number, ndim: number, dims: BigInt64Array, outTensor: BigInt64Array];
  gc_fill: [y: T, value: number];
  gc_copy: [y: T, x: T];
  gc_axpby: [y: T, alpha: number, x: T, beta: number];
  gc_add_forward: [y: T, a: T, b: T];
  gc_add_backward: [da: T, db: T, dy: T];
  gc_transpose_forward: [y: T, x: T];
  gc_transpose_backward: [dx: T, dy: T];
  gc_concat_forward: [y: T, a: T, b: T];
  gc_concat_backward: [da: T, db: T, dy: T];
  gc_upsample2x_forward: [y: T, x: T, channelsLast: number];
  gc_upsample2x_backward: [dx: T, dy: T, channelsLast: number];
  gc_conv2d_forward: [y: T, x: T, w: T, b: T, stride: number, pad: number, channelsLast: number];
  gc_conv2d_backward: [dx: T, dw: T, db: T, dy: T, x: T, w: T, stride: number, pad: number, channelsLast: number];
  gc_linear_forward: [y: T, x: T, w: T, b: T, accumulate: number];
  gc_linear_backward: [dx: T, dw: T, db: T, dy: T, x: T, w: T, accumulate: number];
  gc_group_norm_forward: [
    y: T,
    mean: T,
    rstd: T,
    x: T,
    gamma: T,
    beta: T,
    groups: number,
    eps: number,
    silu: number,
    channelsLast: number,
  ];
  gc_group_norm_backward: [
    dx: T,
    dgamma: T,
    dbeta: T,
    dy: T,
    x: T,
    mean: T,
    rstd: T,
    gamma: T,
    beta: T,
    groups: number,
    silu: number,
    channelsLast: number,
  ];
  gc_layer_norm_forward: [y: T, mean: T, rstd: T, x: T, gamma: T, beta: T, eps: number];
  gc_layer_norm_backward: [dx: T, dgamma: T, dbeta: T, dy: T, x: T, mean: T, rstd: T, gamma: T];
  gc_activation_forward: [kind: number, y: T, x: T];
  gc_activation_backward: [kind: number, dx: T, dy: T, x: T];
  gc_geglu_forward: [y: T, x: T];
  gc_geglu_backward: [dx: T, dy: T, x: T];
  gc_geglu_feedforward_forward: [y: T, x: T, w1: T, b1: T, w2: T, b2: T, h: T, g: T];
  gc_attention_forward: [out: T, probs: T, q: T, k: T, v: T, heads: number, causal: number, scale: number];
  gc_attention_backward: [dq: T, dk: T, dv: T, dout: T, q: T, k: T, v: T, probs: T, heads: number, scale: number];
  gc_embedding_forward: [y: T, ids: T, tok: T, pos: T];
  gc_embedding_backward: [dtok: T, dpos: T, dy: T, ids: T];
  gc_timestep_embedding_forward: [y: T, t: T, flipSinToCos: number, freqShift: number, maxPeriod: number];
  gc_timestep_embedding_backward: [dt: T, dy: T, t: T, flipSinToCos: number, freqShift: number, maxPeriod: number];
  gc_mse_forward: [loss: T, a: T, b: T, weights: T];
  gc_mse_backward: [da: T, db: T, dloss: number, a: T, b: T, weights: T];
  gc_ddim_step_sample: [
    xPrev: T,
    logProb: T,
    mean: T,
    xT: T,
    eps: T,
    noise: T,
    alphaT: Float64Array,
    alphaPrev: Float64Array,
    eta: number,
    clipX0: number,
  ];
  gc_ddim_step_log_prob: [
    logProb: T,
    mean: T,
    xPrev: T,
    xT: T,
    eps: T,
    alphaT: Float64Array,
    alphaPrev: Float64Array,
    eta: number,
    clipX0: number,
  ];
  gc_ddim_step_log_prob_backward: [
    deps: T,
    dlogProb: T,
    xPrev: T,
    xT: T,
    eps: T,
    alphaT: Float64Array,
    alphaPrev: Float64Array,
    eta: number,
    clipX0: number,
  ];
  gc_ddpo_is_forward: [
    loss: T,
    stats: T,
    logProb: T,
    oldLogProb: T,
    advantages: T,
    clipRange: number,
    advClipMax: number,
  ];
  gc_ddpo_is_backward: [
    dlogProb: T,
    dloss: number,
    logProb: T,
    oldLogProb: T,
    advantages: T,
    clipRange: number,
    advClipMax: number,
  ];
  gc_ddpo_sf_forward: [loss: T, logProb: T, advantages: T, advClipMax: number];
  gc_ddpo_sf_backward: [dlogProb: T, dloss: number, advantages: T, advClipMax: number];
  gc_adamw_step: [
    params: T,
    grads: T,
    m: T,
    v: T,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ];
  gc_clip_grad_norm: [grads: T, maxNorm: number, outNorm: Float64Array];
  gc_randn: [y: T, seed: bigint, offset: bigint];
}

export type GpuCoreLibrary = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

export function openLibrary(path: string): { lib: GpuCoreLibrary; close: () => void } {
  const handle = dlopen(path, symbols);
  return { lib: handle.symbols, close: () => handle.close() };
}
