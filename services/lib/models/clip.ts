// transformers' CLIPTextModel (pre-LayerNorm causal transformer), written once over Layers<T>:
// the same config keys, parameter names (without the `text_model.` prefix), shapes and constants.

import type { Activation } from "../../../gpu-core/index.ts";
import type { Layers, Shaped } from "./layers.ts";

export interface ClipTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  [key: string]: unknown;
}

const ACTS: Record<string, Activation> = { quick_gelu: "quick_gelu", gelu: "gelu", gelu_new: "gelu_tanh" };

export function validateClipTextConfig(raw: Record<string, unknown>): ClipTextConfig {
  const c = raw as ClipTextConfig;
  const problems: string[] = [];
  for (const k of [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
  ] as const) {
    if (!Number.isInteger(c[k]) || (c[k] as number) < 1) problems.push(`${k} must be a positive integer`);
  }
  if (!(c.hidden_act in ACTS)) problems.push(`unsupported hidden_act ${c.hidden_act}`);
  if (c.hidden_size % c.num_attention_heads !== 0) problems.push("num_attention_heads must divide hidden_size");
  if (!(c.layer_norm_eps > 0)) problems.push("layer_norm_eps must be > 0");
  if (problems.length) throw new Error(`CLIP text config: ${problems.join("; ")}`);
  return c;
}

/** last_hidden_state [B,L,hidden] of input_ids [B,L] (i32, L <= max_position_embeddings). */
export function clipTextForward<T extends Shaped>(L: Layers<T>, c: ClipTextConfig, inputIds: T): T {
  const d = c.hidden_size;
  const act = ACTS[c.hidden_act]!;
  let h = L.embedding(
    inputIds,
    "embeddings.token_embedding.weight",
    c.vocab_size,
    d,
    "embeddings.position_embedding.weight",
    c.max_position_embeddings,
  );
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const name = `encoder.layers.${i}`;
    const n1 = L.layerNorm(h, `${name}.layer_norm1`, c.layer_norm_eps);
    const q = L.linear(n1, `${name}.self_attn.q_proj`, d);
    const k = L.linear(n1, `${name}.self_attn.k_proj`, d);
    const v = L.linear(n1, `${name}.self_attn.v_proj`, d);
    const a = L.attention(q, k, v, c.num_attention_heads, true);
    h = L.add(h, L.linear(a, `${name}.self_attn.out_proj`, d));
    const n2 = L.layerNorm(h, `${name}.layer_norm2`, c.layer_norm_eps);
    const f = L.act(act, L.linear(n2, `${name}.mlp.fc1`, c.intermediate_size));
    h = L.add(h, L.linear(f, `${name}.mlp.fc2`, d));
  }
  return L.layerNorm(h, "final_layer_norm", c.layer_norm_eps);
}
