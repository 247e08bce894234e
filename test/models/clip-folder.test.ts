// Local transformers CLIP folders load unchanged: clip_tiny's weights written here in F16 and BF16
// (with the position_ids buffer older exports carry and an openai-style preprocessor_config.json)
// load upcast to float32 and give transformers' embeddings within half-precision error; a folder
// with CLIP's BPE tokenizer at its root (openai/clip-vit-* layout) embeds texts; a checkpoint
// that does not fit is refused naming every missing and unexpected tensor.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import {
  type LoadedTensor,
  readSafetensors,
  type TensorToWrite,
  writeSafetensors,
} from "../../services/lib/checkpoints/safetensors.ts";
import { ClipBpeTokenizer } from "../../services/lib/data/clip-bpe.ts";
import { OPENAI_CLIP_MEAN, OPENAI_CLIP_STD } from "../../services/lib/data/clip-image.ts";
import { ClipModel, clipTextPoolPositions } from "../../services/lib/models/clip-model.ts";
import { relativeError } from "./tiny-model.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const TINY = join(FIXTURES, "clip_tiny");
const engine = Engine.open();
const root = mkdtempSync(join(tmpdir(), "clip-folder-"));
afterAll(() => {
  engine.close();
  rmSync(root, { recursive: true, force: true });
});

const weights = readSafetensors(join(TINY, "model.safetensors")).tensors;
const io = readSafetensors(join(TINY, "io.safetensors")).tensors;

/** clip_tiny as a transformers folder with its weights in `dtype`, minus `drop`, plus `extra`. */
function writeFolder(
  name: string,
  dtype: "F16" | "BF16",
  opts: { drop?: string[]; extra?: Record<string, TensorToWrite> } = {},
): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(TINY, "config.json"), join(dir, "config.json"));
  const tensors: Record<string, TensorToWrite> = {};
  for (const [k, t] of weights) if (!opts.drop?.includes(k)) tensors[k] = { shape: t.shape, data: t.data, dtype };
  // A buffer, not a parameter: skipped on load as transformers does.
  tensors["text_model.embeddings.position_ids"] = {
    shape: [1, 16],
    data: Int32Array.from({ length: 16 }, (_, i) => i),
  };
  Object.assign(tensors, opts.extra ?? {});
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  // openai's normalisation; rescale and mean/std apply only in embedRgb / embedImages.
  const preprocessor = {
    image_processor_type: "CLIPImageProcessor",
    do_resize: true,
    size: { shortest_edge: 32 },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: 32, width: 32 },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: OPENAI_CLIP_MEAN,
    image_std: OPENAI_CLIP_STD,
  };
  writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify(preprocessor, null, 2));
  return dir;
}

function tensor(t: LoadedTensor | undefined, name: string): LoadedTensor {
  if (!t) throw new Error(`fixture lacks ${name}`);
  return t;
}

describe("transformers CLIP folders in half precision", () => {
  // Unit roundoff of the format: every normal value is within u * |x| of its float32 source.
  for (const [dtype, roundoff, tolerance] of [
    ["F16", 2 ** -11, 2e-3],
    ["BF16", 2 ** -8, 1.5e-2],
  ] as const) {
    test(`${dtype} weights are upcast on load and embed as transformers does`, () => {
      const clip = ClipModel.load(engine, writeFolder(dtype.toLowerCase(), dtype));
      expect(clip.tokenizer).toBeNull();
      expect(clip.processor.mean).toEqual(OPENAI_CLIP_MEAN);
      const flat = clip.params.values.read();
      let worst = 0;
      for (const e of clip.params.entries) {
        const ref = tensor(weights.get(e.name), e.name).data;
        for (let i = 0; i < ref.length; i++) {
          const x = ref[i]!;
          if (Math.abs(x) < 1e-4) continue; // subnormal range of F16: absolute, not relative, error
          worst = Math.max(worst, Math.abs(flat[e.offset + i]! - x) / Math.abs(x));
        }
      }
      expect(worst).toBeGreaterThan(0); // really rounded, so really read as half precision
      expect(worst).toBeLessThanOrEqual(roundoff);

      const pixels = tensor(io.get("pixel_values"), "pixel_values");
      const err = relativeError(
        clip.embedPixelValues(Float32Array.from(pixels.data)),
        tensor(io.get("image_embeds"), "image_embeds").data,
      );
      console.log(
        `${dtype}: worst weight rounding ${worst.toExponential(2)}, image_embeds rel. error ${err.toExponential(2)}`,
      );
      expect(err).toBeLessThan(tolerance);
      clip.close();
    });
  }

  test("a missing and an unexpected tensor are both named, nothing is loaded", () => {
    const dir = writeFolder("mismatch", "F16", {
      drop: ["vision_model.post_layernorm.weight"],
      extra: { "vision_model.head.weight": { shape: [2, 2], data: new Float32Array(4), dtype: "F16" } },
    });
    expect(() => ClipModel.load(engine, dir)).toThrow(
      /missing from the checkpoint \(1\):\s+vision_model\.post_layernorm\.weight \[32\][\s\S]*unexpected in the checkpoint \(1\):\s+vision_model\.head\.weight \[2, 2\]/,
    );
  });

  test("a missing folder or weights file is named", () => {
    expect(() => ClipModel.load(engine, join(root, "nowhere"))).toThrow(/nowhere: no such CLIP model folder/);
    const dir = join(root, "no-weights");
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(TINY, "config.json"), join(dir, "config.json"));
    expect(() => ClipModel.load(engine, dir)).toThrow(/model\.safetensors: missing/);
  });
});

test("openai layout: CLIP's BPE tokenizer at the folder root embeds texts, pooled at <eos>", () => {
  const tok = ClipBpeTokenizer.load(join(FIXTURES, "clip_bpe_tiny"));
  // clip-vit-* text configs: 77 positions, legacy eos_token_id 2 (pool at the highest id, <|endoftext|>).
  const config = {
    projection_dim: 8,
    logit_scale_init_value: 2.6592,
    text_config: {
      vocab_size: tok.vocabSize,
      max_position_embeddings: 77,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      eos_token_id: 2,
    },
    vision_config: {
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      image_size: 8,
      patch_size: 4,
      num_channels: 3,
    },
  };
  const model = ClipModel.create(engine, config, tok, 3);
  const dir = join(root, "openai-layout");
  model.save(dir);
  const loaded = ClipModel.load(engine, dir);
  expect(loaded.tokenizer).toBeInstanceOf(ClipBpeTokenizer);
  expect(loaded.textTokenizer.maxLength).toBe(77);
  const { ids, poolAt } = loaded.encodeTexts(["cat face", "A Cat  Face"]);
  expect(Array.from(ids.subarray(0, 4))).toEqual([912, 779, 524, 913]);
  expect(Array.from(poolAt)).toEqual([3, 4]);
  expect(Array.from(clipTextPoolPositions(ids, 77, 2))).toEqual([3, 4]);
  const a = loaded.embedTexts(["cat face", "tiger"]);
  expect([...a]).toEqual([...model.embedTexts(["cat face", "tiger"])]);
  loaded.close();
  model.close();
});
