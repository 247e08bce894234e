// A text-to-image diffusion model as the system holds it: UNet + CLIP text encoder parameters in
// flat engine buffers, their configs, the word tokenizer and the noise schedule; loaded from and
// saved to a diffusers-layout folder (unet/, text_encoder/, tokenizer/, scheduler/).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Engine, Tensor } from "../../../gpu-core/index.ts";
import type { FlatParameters } from "../../../gpu-core/parameters.ts";
import type { SchedulerConfig } from "../checkpoints/model-folder.ts";
import {
  CLIP_TEXT_IGNORED,
  CLIP_TEXT_PREFIXES,
  loadIntoParameters,
  type PipelineManifest,
  readPipeline,
  savePipeline,
} from "../checkpoints/model-folder.ts";
import { WordTokenizer } from "../data/tokenizer.ts";
import { NoiseSchedule } from "../diffusion/schedule.ts";
import { type ClipTextConfig, clipTextForward, validateClipTextConfig } from "./clip.ts";
import type { Graph, ParameterSource } from "./graph.ts";
import type { Layers, ParameterShape, Shaped } from "./layers.ts";
import { allocateParameters, initialiseParameters, listParameters, parameterSource } from "./parameters.ts";
import { type UNetConfig, unetForward, validateUNetConfig } from "./unet.ts";

export interface ModelConfigs {
  unet: Record<string, unknown>;
  textEncoder: Record<string, unknown>;
  scheduler: SchedulerConfig;
}

export class TextToImageModel {
  readonly unetConfig: UNetConfig;
  readonly textConfig: ClipTextConfig;
  readonly schedule: NoiseSchedule;
  readonly unetShapes: ParameterShape[];
  readonly textShapes: ParameterShape[];
  readonly unet: FlatParameters;
  readonly textEncoder: FlatParameters;

  private constructor(
    readonly engine: Engine,
    readonly configs: ModelConfigs,
    readonly tokenizer: WordTokenizer,
  ) {
    this.unetConfig = validateUNetConfig(configs.unet);
    this.textConfig = validateClipTextConfig(configs.textEncoder);
    if (tokenizer.vocabSize > this.textConfig.vocab_size) {
      throw new Error(
        `tokenizer has ${tokenizer.vocabSize} tokens, the text encoder only ${this.textConfig.vocab_size}`,
      );
    }
    if (tokenizer.maxLength > this.textConfig.max_position_embeddings) {
      throw new Error("tokenizer max length exceeds the text encoder's positions");
    }
    if (this.textConfig.hidden_size !== this.unetConfig.cross_attention_dim) {
      throw new Error("text encoder hidden_size must equal the UNet's cross_attention_dim");
    }
    this.schedule = new NoiseSchedule(configs.scheduler);
    const size = this.unetConfig.sample_size;
    this.unetShapes = listParameters((L) =>
      unetForward(
        L,
        this.unetConfig,
        L.input([1, this.unetConfig.in_channels, size, size]),
        L.input([1]),
        L.input([1, tokenizer.maxLength, this.unetConfig.cross_attention_dim]),
      ),
    );
    this.textShapes = listParameters((L) => clipTextForward(L, this.textConfig, L.input([1, tokenizer.maxLength])));
    this.unet = allocateParameters(engine, this.unetShapes);
    this.textEncoder = allocateParameters(engine, this.textShapes);
  }

  /** A freshly initialised model (PyTorch default initialisation, Philox stream `seed`). */
  static create(engine: Engine, configs: ModelConfigs, tokenizer: WordTokenizer, seed: number): TextToImageModel {
    const m = new TextToImageModel(engine, configs, tokenizer);
    initialiseParameters(engine, m.unet, m.unetShapes, seed);
    initialiseParameters(engine, m.textEncoder, m.textShapes, seed + 1);
    return m;
  }

  /** Loads a diffusers-layout folder; refuses mismatched or corrupt weights with a clear error. */
  static load(engine: Engine, root: string): TextToImageModel {
    const folder = readPipeline(root);
    const tokenizer = WordTokenizer.load(root);
    const m = new TextToImageModel(
      engine,
      { unet: folder.unetConfig, textEncoder: folder.textEncoderConfig, scheduler: folder.scheduler },
      tokenizer,
    );
    try {
      loadIntoParameters(m.unet, folder.paths.unetWeights);
      loadIntoParameters(m.textEncoder, folder.paths.textEncoderWeights, {
        stripPrefix: CLIP_TEXT_PREFIXES,
        ignore: CLIP_TEXT_IGNORED,
      });
    } catch (err) {
      m.close();
      throw err;
    }
    return m;
  }

  /** Writes the whole folder atomically; returns every file's sha256. */
  save(root: string, metadata: Record<string, string> = {}): PipelineManifest {
    const staging = mkdtempSync(join(tmpdir(), "ddpo-tokenizer-"));
    try {
      this.tokenizer.save(staging);
      return savePipeline(root, {
        unet: { config: this.configs.unet, params: this.unet, metadata: { format: "pt", ...metadata } },
        textEncoder: {
          config: this.configs.textEncoder,
          params: this.textEncoder,
          metadata: { format: "pt", ...metadata },
        },
        scheduler: this.configs.scheduler,
        tokenizerFrom: join(staging, "tokenizer"),
        tokenizerClass: ["ddpo", "WordLevelTokenizer"],
      });
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  get parameterCount(): { unet: number; textEncoder: number } {
    return { unet: this.unet.total, textEncoder: this.textEncoder.total };
  }

  unetSource(opts: { frozen?: boolean } = {}): ParameterSource {
    return parameterSource(this.unet, opts);
  }

  textSource(opts: { frozen?: boolean } = {}): ParameterSource {
    return parameterSource(this.textEncoder, opts);
  }

  /** Token ids [B, L] (i32) -> context [B, L, hidden]. */
  encodeText<T extends Shaped>(L: Layers<T>, ids: T): T {
    return clipTextForward(L, this.textConfig, ids);
  }

  /** eps prediction for x_t [B,C,H,W] at timesteps [B] (float) given context [B,L,D]. */
  predictNoise<T extends Shaped>(L: Layers<T>, x: T, timesteps: T, context: T): T {
    return unetForward(L, this.unetConfig, x, timesteps, context);
  }

  /** Convenience: the graph's text encoding of `prompts` (token ids uploaded into the arena). */
  encodePrompts(g: Graph, prompts: readonly string[]): { ids: Tensor<"i32">; context: Tensor } {
    const ids = this.engine.fromInt32(this.tokenizer.encodeBatch(prompts), [prompts.length, this.tokenizer.maxLength], {
      arena: g.arena,
    });
    return { ids, context: this.encodeText(g, ids) };
  }

  close(): void {
    this.unet.close();
    this.textEncoder.close();
  }
}
