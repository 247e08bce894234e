// The shipped base model's architecture: a pixel-space 3x32x32 UNet2DConditionModel and a small
// CLIPTextModel, with complete diffusers / transformers configs so the folder loads in Python.

import type { SchedulerConfig } from "../checkpoints/model-folder.ts";
import { PIXEL_SCHEDULER } from "../diffusion/schedule.ts";

export function emojiUNetConfig(
  blockOutChannels: number[] = [64, 128, 128],
  crossAttentionDim = 64,
): Record<string, unknown> {
  return {
    _class_name: "UNet2DConditionModel",
    _diffusers_version: "0.40.0.dev0",
    act_fn: "silu",
    addition_embed_type: null,
    addition_time_embed_dim: null,
    attention_head_dim: 4, // heads per block (diffusers' SD-1.x naming quirk)
    attention_type: "default",
    block_out_channels: blockOutChannels,
    center_input_sample: false,
    class_embed_type: null,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: crossAttentionDim,
    cross_attention_norm: null,
    down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding: 1,
    dropout: 0.0,
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 3,
    layers_per_block: 1,
    mid_block_scale_factor: 1,
    mid_block_type: "UNetMidBlock2DCrossAttn",
    norm_eps: 1e-5,
    norm_num_groups: 16,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 3,
    resnet_time_scale_shift: "default",
    sample_size: 32,
    time_cond_proj_dim: null,
    time_embedding_type: "positional",
    transformer_layers_per_block: 1,
    up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    upcast_attention: false,
    use_linear_projection: false,
  };
}

export function emojiTextEncoderConfig(vocabSize: number, hidden = 64, maxLength = 16): Record<string, unknown> {
  return {
    architectures: ["CLIPTextModel"],
    model_type: "clip_text_model",
    attention_dropout: 0.0,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    hidden_act: "quick_gelu",
    hidden_size: hidden,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 4 * hidden,
    layer_norm_eps: 1e-5,
    max_position_embeddings: maxLength,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    projection_dim: hidden,
    vocab_size: vocabSize,
    dtype: "float32",
  };
}

export const EMOJI_SCHEDULER: SchedulerConfig = PIXEL_SCHEDULER;

/** Sizes of the emoji CLIP (models/emoji-clip): one width for both towers. */
export interface EmojiClipSizes {
  width: number;
  textLayers: number;
  visionLayers: number;
  heads: number;
  projectionDim: number;
  imageSize: number;
  patchSize: number;
}

export const EMOJI_CLIP_SIZES: EmojiClipSizes = {
  width: 64,
  textLayers: 2,
  visionLayers: 4,
  heads: 4,
  projectionDim: 64,
  imageSize: 32,
  patchSize: 4,
};

/**
 * A transformers CLIPConfig as transformers writes it, for a word tokenizer in the eos-last
 * layout (its eos_token_id is not the legacy 2, so transformers pools at the first eos).
 */
export function emojiClipConfig(
  tokenizer: { vocabSize: number; maxLength: number; padId: number; bosId: number; eosId: number },
  sizes: EmojiClipSizes = EMOJI_CLIP_SIZES,
): Record<string, unknown> {
  const tower = {
    attention_dropout: 0.0,
    hidden_act: "quick_gelu",
    hidden_size: sizes.width,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 4 * sizes.width,
    layer_norm_eps: 1e-5,
    num_attention_heads: sizes.heads,
    projection_dim: sizes.projectionDim,
  };
  return {
    architectures: ["CLIPModel"],
    model_type: "clip",
    dtype: "float32",
    initializer_factor: 1.0,
    logit_scale_init_value: 2.6592, // ln(1 / 0.07), CLIP's initial temperature
    projection_dim: sizes.projectionDim,
    text_config: {
      ...tower,
      model_type: "clip_text_model",
      num_hidden_layers: sizes.textLayers,
      vocab_size: tokenizer.vocabSize,
      max_position_embeddings: tokenizer.maxLength,
      bos_token_id: tokenizer.bosId,
      eos_token_id: tokenizer.eosId,
      pad_token_id: tokenizer.padId,
    },
    vision_config: {
      ...tower,
      model_type: "clip_vision_model",
      num_hidden_layers: sizes.visionLayers,
      image_size: sizes.imageSize,
      patch_size: sizes.patchSize,
      num_channels: 3,
    },
  };
}
