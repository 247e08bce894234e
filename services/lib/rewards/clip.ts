// The paper's two learned rewards on CLIP models users already have (DESIGN.md §6):
// - clip_alignment: cosine of the image and prompt embeddings under a CLIP (the emoji CLIP by
//   default, or any transformers CLIP folder), as CLIPScore 100 * max(cos, 0) or raw;
// - aesthetic: the LAION improved-aesthetic-predictor head over L2-normalised CLIP image
//   embeddings (ViT-L/14, 768 wide, for the published head).
// Images go through the folder's CLIPImageProcessor settings (bicubic resize, centre crop, mean/std).
// The CLIPs run in one engine worker per process (clip-worker.ts), off the event loop; each folder
// is loaded there once, when first scored. The folder is named in the reward's name and
// description, so recorded reward rows say which model scored.

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Engine } from "../../../gpu-core/index.ts";
import { readJsonConfig } from "../checkpoints/model-folder.ts";
import { ClipModel, validateClipConfig } from "../models/clip-model.ts";
import { WorkerClient } from "../workers/worker-rpc.ts";
import { AestheticHead } from "./aesthetic.ts";
import type { ClipWorkerHandlers } from "./clip-worker.ts";
import { type ImageSize, type RewardFunction, validateBatch } from "./reward-function.ts";

/** The shipped emoji CLIP, the default scorer of clip_alignment. */
export const EMOJI_CLIP_DIR = resolve(import.meta.dir, "..", "..", "..", "models", "emoji-clip");

export const CLIP_ALIGNMENT = "clip_alignment";
export const AESTHETIC = "aesthetic";
/** Where a bare `aesthetic` finds its head (safetensors) and its CLIP folder. */
export const AESTHETIC_HEAD_ENV = "DDPO_AESTHETIC_HEAD";
export const AESTHETIC_CLIP_ENV = "DDPO_AESTHETIC_CLIP";

let engine: Engine | undefined;
const clips = new Map<string, ClipModel>();

let worker: WorkerClient<ClipWorkerHandlers> | undefined;

/** The process's CLIP engine thread, started on first use; it does not keep the process alive. */
function clipWorker(): WorkerClient<ClipWorkerHandlers> {
  if (!worker) {
    worker = new WorkerClient<ClipWorkerHandlers>(new URL("./clip-worker.ts", import.meta.url));
    worker.unref();
  }
  return worker;
}

/** RGB uint8 images (N, H, W, 3) -> L2-normalised image embeddings [N, P] under the CLIP at dir, in the worker. */
async function imageEmbeds(dir: string, images: Uint8Array, size: ImageSize): Promise<Float64Array> {
  return clipWorker().call("imageEmbeds", { dir, images, height: size.height, width: size.width });
}

/** The CLIP of a folder, loaded once per thread (the worker's, or a caller's own). */
export function sharedClip(dir: string): ClipModel {
  const key = resolve(dir);
  let clip = clips.get(key);
  if (!clip) {
    engine ??= Engine.open();
    clip = ClipModel.load(engine, key);
    clips.set(key, clip);
  }
  return clip;
}

/** projection_dim of a CLIP folder's config (read here; the weights load in the worker). */
function projectionDim(dir: string): number {
  return validateClipConfig(readJsonConfig(join(dir, "config.json"))).projection_dim;
}

function requireFolder(reward: string, what: string, dir: string): void {
  if (!existsSync(join(dir, "config.json")) || !existsSync(join(dir, "model.safetensors"))) {
    throw new Error(`${reward}: ${what} ${dir} is not a CLIP folder (config.json + model.safetensors)`);
  }
}

export type AlignmentScale = "clipscore" | "raw";

/**
 * clip_alignment[:raw|:clipscore][:<CLIP folder>]: per image, cos(image, prompt) under the CLIP;
 * CLIPScore's scale (default) is 100 * max(cos, 0).
 */
export function clipAlignment(opts: { clipDir?: string; scale?: AlignmentScale } = {}): RewardFunction {
  const scale = opts.scale ?? "clipscore";
  const dir = resolve(opts.clipDir ?? EMOJI_CLIP_DIR);
  const parts = [CLIP_ALIGNMENT, ...(scale === "raw" ? ["raw"] : []), ...(opts.clipDir ? [opts.clipDir] : [])];
  const name = parts.join(":");
  requireFolder(name, "CLIP", dir);
  const p = projectionDim(dir);
  const textCache = new Map<string, Float64Array>();
  return {
    name,
    description:
      `cosine of image and prompt under the CLIP at ${dir}` +
      (scale === "raw" ? ", raw in [-1, 1]" : ", as CLIPScore 100 * max(cos, 0) in [0, 100]"),
    async score(images: Uint8Array, size: ImageSize, prompts: readonly string[]): Promise<Float64Array> {
      const n = validateBatch(name, images, size, prompts);
      const missing = [...new Set(prompts)].filter((t) => !textCache.has(t));
      if (missing.length > 0) {
        const { embeds, dropped, maxLength } = await clipWorker().call("textEmbeds", { dir, texts: missing });
        missing.forEach((t, i) => {
          textCache.set(t, embeds.slice(i * p, (i + 1) * p));
          // As transformers does, the text is cut at the tokenizer's length; say so once per prompt.
          if (dropped[i]! > 0) {
            console.warn(
              `${name}: prompt "${t.slice(0, 60)}..." is ${dropped[i]} tokens over the CLIP's ${maxLength}; truncated`,
            );
          }
        });
      }
      const img = await imageEmbeds(dir, images, size);
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const txt = textCache.get(prompts[i]!)!;
        let cos = 0;
        for (let k = 0; k < p; k++) cos += img[i * p + k]! * txt[k]!;
        out[i] = scale === "raw" ? cos : 100 * Math.max(cos, 0);
      }
      return out;
    },
  };
}

/**
 * aesthetic[:<head.safetensors>:<CLIP folder>]: the LAION aesthetic head over the L2-normalised
 * image embeddings of the CLIP (ViT-L/14 for the published head; the widths must agree).
 * Bare `aesthetic` reads the two paths from DDPO_AESTHETIC_HEAD and DDPO_AESTHETIC_CLIP.
 */
export function aesthetic(opts: { headFile?: string; clipDir?: string } = {}): RewardFunction {
  const headFile = opts.headFile ?? process.env[AESTHETIC_HEAD_ENV];
  const clipDir = opts.clipDir ?? process.env[AESTHETIC_CLIP_ENV];
  if (!headFile || !clipDir) {
    const lacking = [!headFile && "the head's weights", !clipDir && "the CLIP ViT-L/14 folder"].filter(Boolean);
    throw new Error(
      `${AESTHETIC}: missing ${lacking.join(" and ")}; name them as ` +
        `aesthetic:<head.safetensors>:<CLIP folder> or set ${AESTHETIC_HEAD_ENV} and ${AESTHETIC_CLIP_ENV}`,
    );
  }
  const name = opts.headFile && opts.clipDir ? `${AESTHETIC}:${opts.headFile}:${opts.clipDir}` : AESTHETIC;
  const head = AestheticHead.load(headFile);
  const dir = resolve(clipDir);
  requireFolder(name, "CLIP", dir);
  const width = projectionDim(dir);
  if (width !== head.inputWidth) {
    throw new Error(
      `${name}: the head takes ${head.inputWidth}-wide image embeddings, the CLIP at ${dir} ` +
        `gives ${width} (the LAION head needs CLIP ViT-L/14, projection_dim 768)`,
    );
  }
  return {
    name,
    description: `LAION aesthetic score (head ${resolve(headFile)}) of the image embedding under the CLIP at ${resolve(clipDir)}`,
    async score(images: Uint8Array, size: ImageSize, prompts: readonly string[]): Promise<Float64Array> {
      validateBatch(name, images, size, prompts);
      return head.forward(await imageEmbeds(dir, images, size));
    },
  };
}

/** The rewards of this file by name (undefined for other names). */
export function clipRewardByName(spec: string): RewardFunction | undefined {
  if (spec === CLIP_ALIGNMENT) return clipAlignment();
  if (spec.startsWith(`${CLIP_ALIGNMENT}:`)) {
    const rest = spec.slice(CLIP_ALIGNMENT.length + 1).split(":");
    const scale = rest[0] === "raw" || rest[0] === "clipscore" ? (rest.shift() as AlignmentScale) : "clipscore";
    const clipDir = rest.join(":");
    return clipAlignment({ scale, clipDir: clipDir === "" ? undefined : clipDir });
  }
  if (spec === AESTHETIC) return aesthetic();
  if (spec.startsWith(`${AESTHETIC}:`)) {
    const [headFile, ...clip] = spec.slice(AESTHETIC.length + 1).split(":");
    if (!headFile || clip.length === 0) {
      throw new Error(`reward "${spec}": write aesthetic:<head.safetensors>:<CLIP folder>`);
    }
    return aesthetic({ headFile, clipDir: clip.join(":") });
  }
  return undefined;
}

export const CLIP_REWARD_PATTERNS = [
  {
    name: `${CLIP_ALIGNMENT}[:raw][:<CLIP folder>]`,
    description:
      "cosine of image and prompt under a CLIP (default the emoji CLIP), as CLIPScore 100 * max(cos, 0) or raw",
  },
  {
    name: `${AESTHETIC}[:<head.safetensors>:<CLIP folder>]`,
    description: `LAION aesthetic head over CLIP ViT-L/14 image embeddings (bare: paths from ${AESTHETIC_HEAD_ENV}, ${AESTHETIC_CLIP_ENV})`,
  },
];
