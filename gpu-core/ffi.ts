// The one bun:ffi symbol table of gpu-core (mirrors include/gpu_core.h). Handles are int64
// values below 2^53 passed as JS numbers; every function returns a gc_status (i32).
import { dlopen, FFIType } from "bun:ffi";

const { i32, i64, u64, f32, ptr, cstring } = FFIType;
const H = i64; // gc_handle

export const symbols = {
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

  gc_fill: { args: [H, H, f32], returns: i32 },
  gc_copy: { args: [H, H, H], returns: i32 },
  gc_axpby: { args: [H, H, f32, H, f32], returns: i32 },
  gc_add_forward: { args: [H, H, H, H], returns: i32 },
  gc_add_backward: { args: [H, H, H, H], returns: i32 },
  gc_transpose_forward: { args: [H, H, H], returns: i32 },
  gc_transpose_backward: { args: [H, H, H], returns: i32 },
  gc_concat_forward: { args: [H, H, H, H], returns: i32 },
  gc_concat_backward: { args: [H, H, H, H], returns: i32 },
  gc_upsample2x_forward: { args: [H, H, H], returns: i32 },
  gc_upsample2x_backward: { args: [H, H, H], returns: i32 },

  gc_conv2d_forward: { args: [H, H, H, H, H, i32, i32], returns: i32 },
  gc_conv2d_backward: { args: [H, H, H, H, H, H, H, i32, i32], returns: i32 },
  gc_linear_forward: { args: [H, H, H, H, H], returns: i32 },
  gc_linear_backward: { args: [H, H, H, H, H, H, H], returns: i32 },
  gc_group_norm_forward: { args: [H, H, H, H, H, H, H, i32, f32], returns: i32 },
  gc_group_norm_backward: { args: [H, H, H, H, H, H, H, H, H, i32], returns: i32 },
  gc_layer_norm_forward: { args: [H, H, H, H, H, H, H, f32], returns: i32 },
  gc_layer_norm_backward: { args: [H, H, H, H, H, H, H, H, H], returns: i32 },
  gc_activation_forward: { args: [H, i32, H, H], returns: i32 },
  gc_activation_backward: { args: [H, i32, H, H, H], returns: i32 },
  gc_geglu_forward: { args: [H, H, H], returns: i32 },
  gc_geglu_backward: { args: [H, H, H, H], returns: i32 },
  gc_attention_forward: { args: [H, H, H, H, H, H, i32, i32, f32], returns: i32 },
  gc_attention_backward: { args: [H, H, H, H, H, H, H, H, H, i32, f32], returns: i32 },
  gc_embedding_forward: { args: [H, H, H, H, H], returns: i32 },
  gc_embedding_backward: { args: [H, H, H, H, H], returns: i32 },
  gc_timestep_embedding_forward: { args: [H, H, H, i32, f32, f32], returns: i32 },
  gc_timestep_embedding_backward: { args: [H, H, H, H, i32, f32, f32], returns: i32 },
  gc_mse_forward: { args: [H, H, H, H, H], returns: i32 },
  gc_mse_backward: { args: [H, H, H, f32, H, H, H], returns: i32 },

  gc_ddim_step_sample: { args: [H, H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddim_step_log_prob: { args: [H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddim_step_log_prob_backward: { args: [H, H, H, H, H, H, ptr, ptr, f32, f32], returns: i32 },
  gc_ddpo_is_forward: { args: [H, H, H, H, H, H, f32, f32], returns: i32 },
  gc_ddpo_is_backward: { args: [H, H, f32, H, H, H, f32, f32], returns: i32 },
  gc_ddpo_sf_forward: { args: [H, H, H, H, f32], returns: i32 },
  gc_ddpo_sf_backward: { args: [H, H, f32, H, f32], returns: i32 },

  gc_adamw_step: { args: [H, H, H, H, H, f32, f32, f32, f32, f32, i64], returns: i32 },
  gc_clip_grad_norm: { args: [H, H, f32, ptr], returns: i32 },
  gc_randn: { args: [H, H, u64, u64], returns: i32 },
} as const;

export type GpuCoreLibrary = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

export function openLibrary(path: string): { lib: GpuCoreLibrary; close: () => void } {
  const handle = dlopen(path, symbols);
  return { lib: handle.symbols, close: () => handle.close() };
}
