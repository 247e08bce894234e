// transformers' CLIPTextModel (pre-LayerNorm causal transformer), written once over Layers<T>:
// the same config keys, parameter names (without the `text_model.` prefix), shapes and constants.
// The encoder layers are shared with the vision tower (clip-model.ts).

import type { Activation } from "../../../gpu-core/index.ts";
import type { Layers, Shaped } from "./layers.ts";

/** The fields CLIPTextConfig and CLIPVisionConfig share. */
export interface ClipEncoderConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  hidden_act: string;
  layer_norm_eps: number;
  [key: string]: unknown;
}

export interface ClipTextConfig extends ClipEncoderConfig {
  vocab_size: number;
  max_position_embeddings: number;
}

export const CLIP_ACTS: Readonly<Record<string, Activation>> = {
  quick_gelu: "quick_gelu",
  gelu: "gelu",
  gelu_new: "gelu_tanh",
};

/** Problems with the encoder fields of a CLIP text or vision config, plus positive-integer `extra` keys. */
export function clipEncoderProblems(c: ClipEncoderConfig, extra: readonly string[]): string[] {
  const problems: string[] = [];
  for (const k of ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", ...extra] as const) {
    if (!Number.isInteger(c[k]) || (c[k] as number) < 1) problems.push(`${k} must be a positive integer`);
  }
  if (!(c.hidden_act in CLIP_ACTS)) problems.push(`unsupported hidden_act ${c.hidden_act}`);
  if (c.hidden_size % c.num_attention_heads !== 0) problems.push("num_attention_heads must divide hidden_size");
  if (!(c.layer_norm_eps > 0)) problems.push("layer_norm_eps must be > 0");
  return problems;
}

export function validateClipTextConfig(raw: Record<string, unknown>): ClipTextConfig {
  const c = raw as ClipTextConfig;
  const problems = clipEncoderProblems(c, ["vocab_size", "max_position_embeddings"]);
  if (problems.length) throw new Error(`CLIP text config: ${problems.join("; ")}`);
  return c;
}

/** transformers' CLIPEncoder: pre-LayerNorm layers `${prefix}encoder.layers.i` over h [B,T,hidden]. */
export function clipEncoder<T extends Shaped>(
  L: Layers<T>,
  c: ClipEncoderConfig,
  h: T,
  causal: boolean,
  prefix = "",
): T {
  const d = c.hidden_size;
  const act = CLIP_ACTS[c.hidden_act]!;
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const name = `${prefix}encoder.layers.${i}`;
    const n1 = L.layerNorm(h, `${name}.layer_norm1`, c.layer_norm_eps);
    const q = L.linear(n1, `${name}.self_attn.q_proj`, d);
    const k = L.linear(n1, `${name}.self_attn.k_proj`, d);
    const v = L.linear(n1, `${name}.self_attn.v_proj`, d);
    const a = L.attention(q, k, v, c.num_attention_heads, causal);
    h = L.add(h, L.linear(a, `${name}.self_attn.out_proj`, d));
    const n2 = L.layerNorm(h, `${name}.layer_norm2`, c.layer_norm_eps);
    const f = L.act(act, L.linear(n2, `${name}.mlp.fc1`, c.intermediate_size));
    h = L.add(h, L.linear(f, `${name}.mlp.fc2`, d));
  }
  return h;
}

/** last_hidden_state [B,L,hidden] of input_ids [B,L] (i32, L <= max_position_embeddings). */
export function clipTextForward<T extends Shaped>(L: Layers<T>, c: ClipTextConfig, inputIds: T, prefix = ""): T {
  const h = L.embedding(
    inputIds,
    `${prefix}embeddings.token_embedding.weight`,
    c.vocab_size,
    c.hidden_size,
    `${prefix}embeddings.position_embedding.weight`,
    c.max_position_embeddings,
  );
  return L.layerNorm(clipEncoder(L, c, h, true, prefix), `${prefix}final_layer_norm`, c.layer_norm_eps);
}
