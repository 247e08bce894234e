// diffusers' UNet2DConditionModel for the block types of DESIGN.md §5 (DownBlock2D,
// CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D; ResnetBlock2D;
// Transformer2DModel with BasicTransformerBlock and GEGLU), written once over Layers<T>:
// same config keys, parameter names, shapes, order of operations and constants. Inside, images
// are channels-last [B,H,W,C] (layers.ts); the sample and the output are NCHW as in diffusers.

import { type Layers, type Shaped, toChannelsFirst, toChannelsLast } from "./layers.ts";

export interface UNetConfig {
  _class_name?: string;
  sample_size: number;
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type: string;
  layers_per_block: number;
  /** In SD-1.x style configs this is the number of heads (diffusers' naming quirk). */
  attention_head_dim: number | number[];
  num_attention_heads?: number | number[] | null;
  cross_attention_dim: number;
  norm_num_groups: number;
  norm_eps: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  act_fn?: string;
  downsample_padding?: number;
  mid_block_scale_factor?: number;
  transformer_layers_per_block?: number;
  use_linear_projection?: boolean;
  [key: string]: unknown;
}

const SUPPORTED_DOWN = new Set(["DownBlock2D", "CrossAttnDownBlock2D"]);
const SUPPORTED_UP = new Set(["UpBlock2D", "CrossAttnUpBlock2D"]);

/** Checks that a config uses only what this implementation computes; returns it typed. */
export function validateUNetConfig(raw: Record<string, unknown>): UNetConfig {
  const c = raw as UNetConfig;
  const problems: string[] = [];
  const want = (ok: boolean, msg: string) => ok || problems.push(msg);
  want(Array.isArray(c.block_out_channels) && c.block_out_channels.length > 0, "block_out_channels must be a list");
  want(
    Array.isArray(c.down_block_types) && c.down_block_types.length === c.block_out_channels?.length,
    "one down block per block_out_channels entry",
  );
  want(
    Array.isArray(c.up_block_types) && c.up_block_types.length === c.block_out_channels?.length,
    "one up block per block_out_channels entry",
  );
  for (const t of c.down_block_types ?? []) want(SUPPORTED_DOWN.has(t), `unsupported down block ${t}`);
  for (const t of c.up_block_types ?? []) want(SUPPORTED_UP.has(t), `unsupported up block ${t}`);
  want(c.mid_block_type === "UNetMidBlock2DCrossAttn", `unsupported mid block ${c.mid_block_type}`);
  want((c.act_fn ?? "silu") === "silu", `unsupported act_fn ${c.act_fn}`);
  want(!c.use_linear_projection, "use_linear_projection=true is not supported");
  want((c.transformer_layers_per_block ?? 1) === 1, "transformer_layers_per_block must be 1");
  want((c.mid_block_scale_factor ?? 1) === 1, "mid_block_scale_factor must be 1");
  want((c.downsample_padding ?? 1) === 1, "downsample_padding must be 1");
  for (const k of ["class_embed_type", "addition_embed_type", "time_cond_proj_dim", "encoder_hid_dim"]) {
    want(raw[k] === null || raw[k] === undefined, `${k} is not supported`);
  }
  want((raw.time_embedding_type ?? "positional") === "positional", "time_embedding_type must be positional");
  want((raw.resnet_time_scale_shift ?? "default") === "default", "resnet_time_scale_shift must be default");
  want(Number.isInteger(c.norm_num_groups) && c.norm_num_groups > 0, "norm_num_groups must be a positive integer");
  if (problems.length) throw new Error(`UNet config: ${problems.join("; ")}`);
  return c;
}

/** Heads per block: num_attention_heads when given, else attention_head_dim (the quirk). */
function headsPerBlock(c: UNetConfig): number[] {
  const h = c.num_attention_heads ?? c.attention_head_dim;
  return Array.isArray(h) ? h : c.block_out_channels.map(() => h);
}

function resnet<T extends Shaped>(L: Layers<T>, x: T, tembAct: T, name: string, out: number, c: UNetConfig): T {
  const groups = c.norm_num_groups;
  const eps = c.norm_eps;
  let h = L.groupNorm(x, `${name}.norm1`, groups, eps, "silu");
  h = L.conv2d(h, `${name}.conv1`, out, 3, 1, 1);
  const [b] = x.shape as [number];
  h = L.add(h, L.reshape(L.linear(tembAct, `${name}.time_emb_proj`, out), [b, 1, 1, out]));
  h = L.groupNorm(h, `${name}.norm2`, groups, eps, "silu");
  h = L.conv2d(h, `${name}.conv2`, out, 3, 1, 1);
  const shortcut = x.shape[3] !== out ? L.conv2d(x, `${name}.conv_shortcut`, out, 1, 1, 0) : x;
  return L.add(shortcut, h);
}

function attention<T extends Shaped>(L: Layers<T>, xq: T, xkv: T, name: string, heads: number): T {
  const dim = xq.shape[2] ?? 0;
  const q = L.linear(xq, `${name}.to_q`, dim, false);
  const k = L.linear(xkv, `${name}.to_k`, dim, false);
  const v = L.linear(xkv, `${name}.to_v`, dim, false);
  return L.linear(L.attention(q, k, v, heads, false), `${name}.to_out.0`, dim);
}

function transformer2d<T extends Shaped>(
  L: Layers<T>,
  x: T,
  context: T,
  name: string,
  heads: number,
  c: UNetConfig,
): T {
  const [b, hh, ww, ch] = x.shape as [number, number, number, number];
  let h = L.groupNorm(x, `${name}.norm`, c.norm_num_groups, 1e-6);
  h = L.conv2d(h, `${name}.proj_in`, ch, 1, 1, 0);
  h = L.reshape(h, [b, hh * ww, ch]); // [B, HW, C] tokens: a channels-last image's pixels
  const blk = `${name}.transformer_blocks.0`;
  const n1 = L.layerNorm(h, `${blk}.norm1`, 1e-5);
  h = L.add(attention(L, n1, n1, `${blk}.attn1`, heads), h);
  h = L.add(attention(L, L.layerNorm(h, `${blk}.norm2`, 1e-5), context, `${blk}.attn2`, heads), h);
  h = L.add(L.feedForward(L.layerNorm(h, `${blk}.norm3`, 1e-5), `${blk}.ff`, 4 * ch), h);
  h = L.reshape(h, [b, hh, ww, ch]);
  return L.add(L.conv2d(h, `${name}.proj_out`, ch, 1, 1, 0), x);
}

/**
 * eps = unet(sample [B,Cin,H,W], timesteps [B] (float), context [B,L,cross_attention_dim]).
 */
export function unetForward<T extends Shaped>(L: Layers<T>, c: UNetConfig, sample: T, timesteps: T, context: T): T {
  const ch0 = c.block_out_channels[0]!;
  const heads = headsPerBlock(c);
  const nBlocks = c.block_out_channels.length;

  let temb = L.timestepEmbedding(timesteps, ch0, c.flip_sin_to_cos, c.freq_shift);
  temb = L.linear(
    L.act("silu", L.linear(temb, "time_embedding.linear_1", 4 * ch0)),
    "time_embedding.linear_2",
    4 * ch0,
  );
  const tembAct = L.act("silu", temb); // each resnet applies SiLU before its time_emb_proj

  let h = L.conv2d(toChannelsLast(L, sample), "conv_in", ch0, 3, 1, 1);
  const skips: T[] = [h];
  for (let i = 0; i < nBlocks; i++) {
    const out = c.block_out_channels[i]!;
    const name = `down_blocks.${i}`;
    for (let j = 0; j < c.layers_per_block; j++) {
      h = resnet(L, h, tembAct, `${name}.resnets.${j}`, out, c);
      if (c.down_block_types[i] === "CrossAttnDownBlock2D") {
        h = transformer2d(L, h, context, `${name}.attentions.${j}`, heads[i]!, c);
      }
      skips.push(h);
    }
    if (i < nBlocks - 1) {
      h = L.conv2d(h, `${name}.downsamplers.0.conv`, out, 3, 2, 1);
      skips.push(h);
    }
  }

  const top = c.block_out_channels[nBlocks - 1]!;
  h = resnet(L, h, tembAct, "mid_block.resnets.0", top, c);
  h = transformer2d(L, h, context, "mid_block.attentions.0", heads[nBlocks - 1]!, c);
  h = resnet(L, h, tembAct, "mid_block.resnets.1", top, c);

  const reversedChannels = [...c.block_out_channels].reverse();
  const reversedHeads = [...heads].reverse();
  for (let i = 0; i < nBlocks; i++) {
    const out = reversedChannels[i]!;
    const name = `up_blocks.${i}`;
    for (let j = 0; j <= c.layers_per_block; j++) {
      h = L.concat(h, skips.pop()!);
      h = resnet(L, h, tembAct, `${name}.resnets.${j}`, out, c);
      if (c.up_block_types[i] === "CrossAttnUpBlock2D") {
        h = transformer2d(L, h, context, `${name}.attentions.${j}`, reversedHeads[i]!, c);
      }
    }
    if (i < nBlocks - 1) h = L.conv2d(L.upsample2x(h), `${name}.upsamplers.0.conv`, out, 3, 1, 1);
  }

  h = L.groupNorm(h, "conv_norm_out", c.norm_num_groups, c.norm_eps, "silu");
  return toChannelsFirst(L, L.conv2d(h, "conv_out", c.out_channels, 3, 1, 1));
}
