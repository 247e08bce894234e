// transformers' CLIPModel written over Layers<T>: the vision tower (a ViT: patch-embedding conv
// without bias, class token, learned positions, pre-LayerNorm, the shared CLIP encoder layers,
// post-LayerNorm on the class token), the text tower of clip.ts under `text_model.`, both
// projections without bias and the learned logit_scale. Names, shapes and config keys are
// transformers' (note its `pre_layrnorm` spelling). The head after the projections (L2
// normalisation, scaled cosine logits, contrastive loss) is a few [B,P] and [Bi,Bt] products: it
// runs on the host in float64 (clipLogits / clipLogitsBackward / contrastiveLoss).

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Engine, Tensor } from "../../../gpu-core/index.ts";
import type { FlatParameters } from "../../../gpu-core/parameters.ts";
import {
  CLIP_TEXT_IGNORED,
  ConfigError,
  loadIntoParameters,
  readJsonConfig,
  saveParameters,
  writeJsonConfig,
} from "../checkpoints/model-folder.ts";
import { ClipBpeTokenizer } from "../data/clip-bpe.ts";
import { type ClipImageProcessing, clipPixelValues, parseClipImageProcessor } from "../data/clip-image.ts";
import { WordTokenizer } from "../data/tokenizer.ts";
import {
  type ClipEncoderConfig,
  type ClipTextConfig,
  clipEncoder,
  clipEncoderProblems,
  clipTextForward,
} from "./clip.ts";
import { Graph, type ParameterSource } from "./graph.ts";
import { type Layers, type ParameterShape, type Shaped, type ShapeRecorder, toChannelsLast } from "./layers.ts";
import { allocateParameters, initialiseParameters, listParameters, parameterSource } from "./parameters.ts";

export interface ClipVisionConfig extends ClipEncoderConfig {
  image_size: number;
  patch_size: number;
  num_channels: number;
}

export interface ClipConfig {
  projection_dim: number;
  logit_scale_init_value: number;
  text_config: ClipTextConfig;
  vision_config: ClipVisionConfig;
  [key: string]: unknown;
}

/** transformers' CLIPTextConfig default, which its pooling rule treats as legacy (see clipTextPoolPositions). */
export const CLIP_LEGACY_EOS_ID = 2;

export function validateClipConfig(raw: Record<string, unknown>): ClipConfig {
  const c = raw as ClipConfig;
  const problems: string[] = [];
  if (!Number.isInteger(c.projection_dim) || c.projection_dim < 1)
    problems.push("projection_dim must be a positive integer");
  if (!Number.isFinite(c.logit_scale_init_value)) problems.push("logit_scale_init_value must be a number");
  const t = c.text_config;
  const v = c.vision_config;
  if (typeof t !== "object" || t === null) problems.push("text_config is missing");
  else
    problems.push(...clipEncoderProblems(t, ["vocab_size", "max_position_embeddings"]).map((p) => `text_config.${p}`));
  if (typeof v !== "object" || v === null) problems.push("vision_config is missing");
  else {
    problems.push(
      ...clipEncoderProblems(v, ["image_size", "patch_size", "num_channels"]).map((p) => `vision_config.${p}`),
    );
    if (v.image_size % v.patch_size !== 0) problems.push("vision_config.patch_size must divide image_size");
  }
  if (problems.length) throw new Error(`CLIP config: ${problems.join("; ")}`);
  return c;
}

/** Patches per image side. */
export function clipGridSize(v: ClipVisionConfig): number {
  return v.image_size / v.patch_size;
}

/** pooler_output [B,hidden] of pixel_values [B,C,S,S]: the post-LayerNorm class token. */
export function clipVisionForward<T extends Shaped>(L: Layers<T>, v: ClipVisionConfig, pixels: T, prefix = ""): T {
  const [b] = pixels.shape as [number];
  const d = v.hidden_size;
  const g = clipGridSize(v);
  const patches = toChannelsLast(L, pixels);
  let h = L.conv2d(patches, `${prefix}embeddings.patch_embedding`, d, v.patch_size, v.patch_size, 0, false); // [B,g,g,D]
  h = L.reshape(h, [b, g * g, d]); // [B,N,D] patch tokens, row-major over the grid
  h = L.prependToken(h, `${prefix}embeddings.class_embedding`);
  h = L.addPositions(h, `${prefix}embeddings.position_embedding.weight`, g * g + 1);
  h = L.layerNorm(h, `${prefix}pre_layrnorm`, v.layer_norm_eps);
  h = clipEncoder(L, v, h, false, prefix);
  const cls = L.selectTokens(h, new Int32Array(b));
  return L.layerNorm(cls, `${prefix}post_layernorm`, v.layer_norm_eps);
}

/**
 * Where transformers' CLIPTextTransformer pools each row of ids [B,L]: with the legacy
 * eos_token_id 2 at argmax(ids) (the eos when it is the highest id, as in openai's vocabulary),
 * otherwise at the first eos_token_id (0 when there is none, as torch's argmax of zeros).
 */
export function clipTextPoolPositions(ids: ArrayLike<number>, length: number, eosTokenId: number): Int32Array {
  const rows = ids.length / length;
  const out = new Int32Array(rows);
  for (let b = 0; b < rows; b++) {
    let at = 0;
    for (let i = 0; i < length; i++) {
      const id = ids[b * length + i]!;
      if (eosTokenId === CLIP_LEGACY_EOS_ID ? id > ids[b * length + at]! : id === eosTokenId) {
        at = i;
        if (eosTokenId !== CLIP_LEGACY_EOS_ID) break;
      }
    }
    out[b] = at;
  }
  return out;
}

/** The text config's eos id (transformers' default when absent). */
export function clipEosTokenId(t: ClipTextConfig): number {
  return typeof t.eos_token_id === "number" ? t.eos_token_id : CLIP_LEGACY_EOS_ID;
}

/** image features [B,P] (visual_projection of the pooled class token, before normalisation). */
export function clipImageFeatures<T extends Shaped>(L: Layers<T>, c: ClipConfig, pixels: T): T {
  const pooled = clipVisionForward(L, c.vision_config, pixels, "vision_model.");
  return L.linear(pooled, "visual_projection", c.projection_dim, false);
}

/** text features [B,P] of ids [B,L] pooled at `poolAt` (clipTextPoolPositions of the same ids). */
export function clipTextFeatures<T extends Shaped>(L: Layers<T>, c: ClipConfig, ids: T, poolAt: ArrayLike<number>): T {
  const hidden = clipTextForward(L, c.text_config, ids, "text_model.");
  return L.linear(L.selectTokens(hidden, poolAt), "text_projection", c.projection_dim, false);
}

/** The learned log temperature (a [1] tensor); logits are exp(logit_scale) * cosine. */
export function clipLogitScale<T extends Shaped>(L: Layers<T>, c: ClipConfig): T {
  return L.parameter("logit_scale", [], c.logit_scale_init_value);
}

/** The whole CLIPModel on shapes (for listing its parameters): one image, one text of `length` tokens. */
export function clipModelDefinition(L: ShapeRecorder, c: ClipConfig, length: number): void {
  const v = c.vision_config;
  clipTextFeatures(L, c, L.input([1, length]), [length - 1]);
  clipImageFeatures(L, c, L.input([1, v.num_channels, v.image_size, v.image_size]));
  clipLogitScale(L, c);
}

// ---- the head, on the host -------------------------------------------------------------------

export interface ClipLogits {
  dim: number;
  imageRows: number;
  textRows: number;
  /** L2-normalised features, [imageRows, dim] and [textRows, dim]. */
  imageEmbeds: Float64Array;
  textEmbeds: Float64Array;
  imageNorms: Float64Array;
  textNorms: Float64Array;
  /** exp(logit_scale). */
  scale: number;
  /** scale * imageEmbeds @ textEmbeds^T, [imageRows, textRows]. */
  logitsPerImage: Float64Array;
}

/** Rows of x [rows, dim] scaled to unit length, and their norms. */
export function normaliseRows(x: ArrayLike<number>, dim: number): { embeds: Float64Array; norms: Float64Array } {
  const rows = x.length / dim;
  const embeds = new Float64Array(x.length);
  const norms = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[r * dim + i]! ** 2;
    const n = Math.sqrt(s);
    norms[r] = n;
    for (let i = 0; i < dim; i++) embeds[r * dim + i] = x[r * dim + i]! / n;
  }
  return { embeds, norms };
}

/** Normalised embeddings and logits of image features [Bi,dim] and text features [Bt,dim]. */
export function clipLogits(
  imageFeatures: ArrayLike<number>,
  textFeatures: ArrayLike<number>,
  dim: number,
  logitScale: number,
): ClipLogits {
  const image = normaliseRows(imageFeatures, dim);
  const text = normaliseRows(textFeatures, dim);
  const imageRows = image.norms.length;
  const textRows = text.norms.length;
  const scale = Math.exp(logitScale);
  const logitsPerImage = new Float64Array(imageRows * textRows);
  for (let i = 0; i < imageRows; i++)
    for (let j = 0; j < textRows; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += image.embeds[i * dim + k]! * text.embeds[j * dim + k]!;
      logitsPerImage[i * textRows + j] = scale * s;
    }
  return {
    dim,
    imageRows,
    textRows,
    imageEmbeds: image.embeds,
    textEmbeds: text.embeds,
    imageNorms: image.norms,
    textNorms: text.norms,
    scale,
    logitsPerImage,
  };
}

/**
 * Gradients of the features and of logit_scale from upstream gradients of the embeddings and
 * the logits (each optional). d(x/|x|) = (de - e (e . de)) / |x|; d logit_scale = sum(dL * L).
 */
export function clipLogitsBackward(
  f: ClipLogits,
  d: { imageEmbeds?: ArrayLike<number>; textEmbeds?: ArrayLike<number>; logitsPerImage?: ArrayLike<number> },
): { imageFeatures: Float32Array; textFeatures: Float32Array; logitScale: number } {
  const { dim, imageRows: bi, textRows: bt } = f;
  const dImg = new Float64Array(bi * dim);
  const dTxt = new Float64Array(bt * dim);
  if (d.imageEmbeds) for (let i = 0; i < dImg.length; i++) dImg[i] = d.imageEmbeds[i]!;
  if (d.textEmbeds) for (let i = 0; i < dTxt.length; i++) dTxt[i] = d.textEmbeds[i]!;
  let logitScale = 0;
  if (d.logitsPerImage) {
    for (let i = 0; i < bi; i++)
      for (let j = 0; j < bt; j++) {
        const g = d.logitsPerImage[i * bt + j]!;
        if (g === 0) continue;
        logitScale += g * f.logitsPerImage[i * bt + j]!;
        const gs = g * f.scale;
        for (let k = 0; k < dim; k++) {
          dImg[i * dim + k]! += gs * f.textEmbeds[j * dim + k]!;
          dTxt[j * dim + k]! += gs * f.imageEmbeds[i * dim + k]!;
        }
      }
  }
  const throughNorm = (de: Float64Array, e: Float64Array, norms: Float64Array) => {
    const out = new Float32Array(de.length);
    for (let r = 0; r < norms.length; r++) {
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += e[r * dim + k]! * de[r * dim + k]!;
      for (let k = 0; k < dim; k++) out[r * dim + k] = (de[r * dim + k]! - e[r * dim + k]! * dot) / norms[r]!;
    }
    return out;
  };
  return {
    imageFeatures: throughNorm(dImg, f.imageEmbeds, f.imageNorms),
    textFeatures: throughNorm(dTxt, f.textEmbeds, f.textNorms),
    logitScale,
  };
}

/**
 * CLIP's symmetric contrastive loss over logits [Bi,Bt] where image i's caption is text
 * labels[i]: the mean of image->text cross-entropy and text->image cross-entropy, the latter
 * with its target spread evenly over the images of that text (a caption may have several images
 * in a batch, e.g. its Noto and its Twemoji drawing). Returns the loss, dloss/dlogits and the
 * image->text top-1 accuracy.
 */
export function contrastiveLoss(
  logitsPerImage: ArrayLike<number>,
  imageRows: number,
  textRows: number,
  labels: ArrayLike<number>,
): { loss: number; dLogits: Float64Array; accuracy: number } {
  const dLogits = new Float64Array(imageRows * textRows);
  let lossImage = 0;
  let correct = 0;
  for (let i = 0; i < imageRows; i++) {
    const row = Array.from({ length: textRows }, (_, j) => logitsPerImage[i * textRows + j]!);
    const max = Math.max(...row);
    const exps = row.map((x) => Math.exp(x - max));
    const z = exps.reduce((a, b) => a + b, 0);
    const label = labels[i]!;
    lossImage += Math.log(z) + max - row[label]!;
    if (row.indexOf(max) === label) correct++;
    for (let j = 0; j < textRows; j++) {
      dLogits[i * textRows + j]! += (0.5 * (exps[j]! / z - (j === label ? 1 : 0))) / imageRows;
    }
  }
  let lossText = 0;
  for (let j = 0; j < textRows; j++) {
    const positives: number[] = [];
    for (let i = 0; i < imageRows; i++) if (labels[i] === j) positives.push(i);
    if (positives.length === 0) throw new Error(`contrastiveLoss: text ${j} has no image in the batch`);
    const col = Array.from({ length: imageRows }, (_, i) => logitsPerImage[i * textRows + j]!);
    const max = Math.max(...col);
    const exps = col.map((x) => Math.exp(x - max));
    const z = exps.reduce((a, b) => a + b, 0);
    const target = 1 / positives.length;
    for (const i of positives) lossText -= target * (col[i]! - max - Math.log(z));
    for (let i = 0; i < imageRows; i++) {
      const t = labels[i] === j ? target : 0;
      dLogits[i * textRows + j]! += (0.5 * (exps[i]! / z - t)) / textRows;
    }
  }
  return {
    loss: 0.5 * (lossImage / imageRows + lossText / textRows),
    dLogits,
    accuracy: correct / imageRows,
  };
}

// ---- the model folder ------------------------------------------------------------------------

/** transformers' layout: config.json + model.safetensors, CLIPImageProcessor settings, and our tokenizer/. */
export const CLIP_FILES = {
  config: "config.json",
  weights: "model.safetensors",
  preprocessor: "preprocessor_config.json",
} as const;

/**
 * pixel_values = rgb / 127.5 - 1 (images in [-1, 1], as the diffusion model draws them): what
 * CLIPImageProcessor does with rescale 1/255, mean 0.5 and std 0.5 at the model's image size.
 */
export function clipPreprocessorConfig(imageSize: number): Record<string, unknown> {
  return {
    image_processor_type: "CLIPImageProcessor",
    do_convert_rgb: true,
    do_resize: true,
    size: { shortest_edge: imageSize },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: imageSize, width: imageSize },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
  };
}

/** What the text tower needs of a tokenizer: the emoji CLIP's WordTokenizer or CLIP's BPE. */
export interface ClipTextTokenizer {
  readonly vocabSize: number;
  readonly maxLength: number;
  readonly eosId: number;
  /** (texts.length, maxLength) int32 ids, padded and truncated. */
  encodeBatch(texts: readonly string[]): Int32Array;
  /** How many tokens of `text` encodeBatch drops (0 when it fits). */
  droppedTokens(text: string): number;
  /** Writes its files into a model folder. */
  save(modelDir: string): void;
}

/**
 * The tokenizer of a CLIP folder: CLIP's BPE (vocab.json + merges.txt at its root, as in
 * openai/clip-vit-*), else the emoji CLIP's tokenizer/ folder, else none (image side only).
 */
export function loadClipTokenizer(dir: string, maxPositions: number): ClipTextTokenizer | null {
  if (ClipBpeTokenizer.isIn(dir)) return ClipBpeTokenizer.load(dir, maxPositions);
  if (existsSync(join(dir, "tokenizer", "vocab.json"))) return WordTokenizer.load(dir);
  return null;
}

/**
 * A CLIPModel in flat engine buffers with its config, tokenizer (null when its folder has none:
 * image embeddings only) and image processor settings.
 */
export class ClipModel {
  readonly config: ClipConfig;
  readonly shapes: ParameterShape[];
  readonly params: FlatParameters;
  readonly processor: ClipImageProcessing;

  private constructor(
    readonly engine: Engine,
    rawConfig: Record<string, unknown>,
    readonly tokenizer: ClipTextTokenizer | null,
    processor?: ClipImageProcessing,
  ) {
    this.config = validateClipConfig(rawConfig);
    const t = this.config.text_config;
    const size = this.config.vision_config.image_size;
    this.processor = processor ?? parseClipImageProcessor(clipPreprocessorConfig(size));
    if (this.processor.cropHeight !== size || this.processor.cropWidth !== size) {
      throw new Error(
        `image processor crops ${this.processor.cropHeight}x${this.processor.cropWidth}, the vision tower takes ${size}x${size}`,
      );
    }
    if (tokenizer) ClipModel.#checkTokenizer(t, tokenizer);
    this.shapes = listParameters((L) =>
      clipModelDefinition(L, this.config, tokenizer?.maxLength ?? t.max_position_embeddings),
    );
    this.params = allocateParameters(engine, this.shapes);
  }

  static #checkTokenizer(t: ClipTextConfig, tokenizer: ClipTextTokenizer): void {
    if (tokenizer.vocabSize > t.vocab_size) {
      throw new Error(`tokenizer has ${tokenizer.vocabSize} tokens, the text tower only ${t.vocab_size}`);
    }
    if (tokenizer.maxLength > t.max_position_embeddings) {
      throw new Error("tokenizer max length exceeds the text tower's positions");
    }
    // The pooling rule of the config must land on the tokenizer's eos (see clipTextPoolPositions).
    const eos = clipEosTokenId(t);
    const poolsAtEos =
      eos === CLIP_LEGACY_EOS_ID ? tokenizer.eosId === tokenizer.vocabSize - 1 : eos === tokenizer.eosId;
    if (!poolsAtEos) {
      const rule = eos === CLIP_LEGACY_EOS_ID ? "the highest token id (legacy eos_token_id 2)" : `token id ${eos}`;
      throw new Error(`text_config pools at ${rule}, not at the tokenizer's <eos> (id ${tokenizer.eosId})`);
    }
  }

  /** A fresh model (PyTorch default initialisation, Philox stream `seed`). */
  static create(
    engine: Engine,
    config: Record<string, unknown>,
    tokenizer: ClipTextTokenizer,
    seed: number,
  ): ClipModel {
    const m = new ClipModel(engine, config, tokenizer);
    initialiseParameters(engine, m.params, m.shapes, seed);
    return m;
  }

  /**
   * A transformers CLIPModel folder as is (our emoji CLIP, or a local copy of
   * openai/clip-vit-base-patch32 or clip-vit-large-patch14): config.json, model.safetensors in
   * F32, F16 or BF16 (upcast to float32), preprocessor_config.json, and the tokenizer files.
   * A checkpoint that does not fit is refused with the list of missing and unexpected names.
   */
  static load(engine: Engine, dir: string): ClipModel {
    if (!existsSync(dir)) throw new ConfigError(dir, "no such CLIP model folder");
    const config = validateClipConfig(readJsonConfig(join(dir, CLIP_FILES.config)));
    const preprocessor = join(dir, CLIP_FILES.preprocessor);
    const processor = existsSync(preprocessor)
      ? parseClipImageProcessor(readJsonConfig(preprocessor), preprocessor)
      : undefined;
    const weights = join(dir, CLIP_FILES.weights);
    if (!existsSync(weights)) throw new ConfigError(weights, "missing (a CLIP folder needs model.safetensors)");
    const m = new ClipModel(
      engine,
      config,
      loadClipTokenizer(dir, config.text_config.max_position_embeddings),
      processor,
    );
    try {
      loadIntoParameters(m.params, weights, { ignore: CLIP_TEXT_IGNORED });
    } catch (err) {
      m.close();
      throw err;
    }
    return m;
  }

  /** Writes config.json, model.safetensors, preprocessor_config.json and tokenizer/ (each file atomically). */
  save(dir: string, metadata: Record<string, string> = {}): void {
    mkdirSync(dir, { recursive: true });
    writeJsonConfig(join(dir, CLIP_FILES.config), this.config);
    saveParameters(this.params, join(dir, CLIP_FILES.weights), { format: "pt", ...metadata });
    writeJsonConfig(join(dir, CLIP_FILES.preprocessor), clipPreprocessorConfig(this.config.vision_config.image_size));
    this.tokenizer?.save(dir);
  }

  source(opts: { frozen?: boolean } = {}): ParameterSource {
    return parameterSource(this.params, opts);
  }

  get imageSize(): number {
    return this.config.vision_config.image_size;
  }

  /** exp(logit_scale): the factor on cosine similarities in the logits. */
  get logitScale(): number {
    return Math.exp(this.params.value("logit_scale").read()[0]!);
  }

  /** Token ids [n, maxLength] of `texts` and where each is pooled. */
  encodeTexts(texts: readonly string[]): { ids: Int32Array; poolAt: Int32Array } {
    const tokenizer = this.textTokenizer;
    const ids = tokenizer.encodeBatch(texts);
    const poolAt = clipTextPoolPositions(ids, tokenizer.maxLength, clipEosTokenId(this.config.text_config));
    return { ids, poolAt };
  }

  /** The tokenizer, or a clear error for a folder without one. */
  get textTokenizer(): ClipTextTokenizer {
    if (!this.tokenizer) throw new Error("this CLIP folder has no tokenizer (vocab.json + merges.txt, or tokenizer/)");
    return this.tokenizer;
  }

  /** Text features [n, P] on a graph (ids uploaded into its arena). */
  textFeatures(g: Graph, texts: readonly string[]): Tensor {
    const { ids, poolAt } = this.encodeTexts(texts);
    const t = this.engine.fromInt32(ids, [texts.length, this.textTokenizer.maxLength], { arena: g.arena });
    return clipTextFeatures(g, this.config, t, poolAt);
  }

  /** L2-normalised text embeddings [n, P], forward only. */
  embedTexts(texts: readonly string[], batch = 256): Float64Array {
    return this.#embed(texts.length, batch, (g, start, count) =>
      this.textFeatures(g, texts.slice(start, start + count)),
    );
  }

  /**
   * L2-normalised image embeddings [n, P] of images [n, C, S, S] in [-1, 1] (as the diffusion
   * model draws them, i.e. rgb / 127.5 - 1), normalised with the processor's mean and std.
   */
  embedImages(pixels: Float32Array, batch = 64): Float64Array {
    const { mean, std, rescaleFactor } = this.processor;
    const v = this.config.vision_config;
    const plane = v.image_size * v.image_size;
    const halves = mean.every((m) => m === 0.5) && std.every((s) => s === 0.5) && rescaleFactor === 1 / 255;
    if (halves || v.num_channels !== 3) return this.embedPixelValues(pixels, batch);
    // x = rgb / 127.5 - 1, so rgb * rescale_factor = (x + 1) * 127.5 * rescale_factor.
    const values = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) {
      const c = Math.floor(i / plane) % 3;
      values[i] = ((pixels[i]! + 1) * 127.5 * rescaleFactor - mean[c]!) / std[c]!;
    }
    return this.embedPixelValues(values, batch);
  }

  /** L2-normalised image embeddings [n, P] of RGB uint8 images (N, H, W, 3) through the image processor. */
  embedRgb(images: Uint8Array, size: { height: number; width: number }, batch = 64): Float64Array {
    return this.embedPixelValues(clipPixelValues(images, size, this.processor).pixels, batch);
  }

  /** L2-normalised image embeddings [n, P] of pixel_values [n, C, S, S] (already normalised). */
  embedPixelValues(pixels: Float32Array, batch = 64): Float64Array {
    const v = this.config.vision_config;
    const per = v.num_channels * v.image_size * v.image_size;
    const n = pixels.length / per;
    if (!Number.isInteger(n)) throw new Error(`pixels hold ${pixels.length} values, not a multiple of ${per}`);
    return this.#embed(n, batch, (g, start, count) => {
      const x = this.engine.fromArray(
        pixels.subarray(start * per, (start + count) * per),
        [count, v.num_channels, v.image_size, v.image_size],
        {
          arena: g.arena,
        },
      );
      return clipImageFeatures(g, this.config, x);
    });
  }

  #embed(n: number, batch: number, features: (g: Graph, start: number, count: number) => Tensor): Float64Array {
    const p = this.config.projection_dim;
    const out = new Float64Array(n * p);
    const arena = this.engine.arena();
    try {
      for (let start = 0; start < n; start += batch) {
        const count = Math.min(batch, n - start);
        const g = new Graph(this.engine, this.source({ frozen: true }), arena);
        out.set(normaliseRows(features(g, start, count).read(), p).embeds, start * p);
        g.dispose();
        arena.reset();
      }
    } finally {
      arena.close();
    }
    return out;
  }

  close(): void {
    this.params.close();
  }
}
