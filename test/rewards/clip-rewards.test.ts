// clip_alignment and aesthetic: the LAION head against its PyTorch outputs (aesthetic_head
// fixture), clip_alignment on real animal emoji with the shipped emoji CLIP (its raw score is the
// zero-shot cosine of the same image, so uint8 preprocessing lands on the pixels the CLIP was
// trained on), CLIPScore scaling, resizing of other image sizes, and the errors a user sees.
import { afterAll, describe, expect, spyOn, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { readSafetensors, writeSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import { ClipBpeTokenizer } from "../../services/lib/data/clip-bpe.ts";
import { loadEmojiDataset, toFloatNCHW } from "../../services/lib/data/emoji.ts";
import { runLocalEpoch } from "../../services/lib/ddpo/local-steps.ts";
import { promptSetFromList } from "../../services/lib/ddpo/prompts.ts";
import { DdpoTrainer } from "../../services/lib/ddpo/trainer.ts";
import { ZeroShotClassifier } from "../../services/lib/eval/zero-shot.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";
import {
  AestheticHead,
  aesthetic,
  EMOJI_CLIP_DIR,
  listRewards,
  rewardByName,
  sharedClip,
} from "../../services/lib/rewards/index.ts";
import { tinyDdpoConfig } from "../ddpo/tiny-config.ts";
import { relativeError, tinyModel } from "../models/tiny-model.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const HEAD = join(FIXTURES, "aesthetic_head", "model.safetensors");
const tmp = mkdtempSync(join(tmpdir(), "clip-rewards-"));
const engine = Engine.open();
afterAll(() => {
  engine.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe("the LAION aesthetic head", () => {
  test("matches PyTorch on the fixture's embeddings", () => {
    const head = AestheticHead.load(HEAD);
    expect(head.inputWidth).toBe(768);
    const io = readSafetensors(join(FIXTURES, "aesthetic_head", "io.safetensors")).tensors;
    const scores = head.forward(io.get("embeds")!.data);
    const ref = io.get("score")!.data;
    expect(scores.length).toBe(4);
    const err = relativeError(scores, ref);
    console.log(`aesthetic head: relative error ${err.toExponential(2)} on 4 embeddings`);
    expect(err).toBeLessThan(1e-5);
  });

  test("a state dict that is not the head is refused, naming what is wrong", () => {
    const w = readSafetensors(HEAD).tensors;
    const bad = join(tmp, "bad-head.safetensors");
    const tensors: Record<string, { shape: readonly number[]; data: Float32Array }> = {};
    for (const [k, t] of w) if (k !== "layers.7.bias") tensors[k] = { shape: t.shape, data: t.data as Float32Array };
    tensors["layers.4.weight"] = { shape: [64, 64], data: new Float32Array(64 * 64) };
    tensors["layers.8.weight"] = { shape: [1], data: new Float32Array(1) };
    writeSafetensors(bad, tensors);
    expect(() => AestheticHead.load(bad)).toThrow(
      /not the LAION head: layers\.4\.weight is \[64, 64\], expected \[64, 128\]; missing layers\.7\.bias \[1\]; unexpected layers\.8\.weight/,
    );
    expect(() => AestheticHead.load(join(tmp, "none.safetensors"))).toThrow(/aesthetic head .*none\.safetensors/);
  });
});

describe("aesthetic reward", () => {
  test("without a head and a CLIP it says what to configure", () => {
    const saved = [process.env.DDPO_AESTHETIC_HEAD, process.env.DDPO_AESTHETIC_CLIP];
    delete process.env.DDPO_AESTHETIC_HEAD;
    delete process.env.DDPO_AESTHETIC_CLIP;
    try {
      expect(() => rewardByName("aesthetic")).toThrow(
        /aesthetic: missing the head's weights and the CLIP ViT-L\/14 folder; name them as aesthetic:<head\.safetensors>:<CLIP folder> or set DDPO_AESTHETIC_HEAD and DDPO_AESTHETIC_CLIP/,
      );
    } finally {
      if (saved[0] !== undefined) process.env.DDPO_AESTHETIC_HEAD = saved[0];
      if (saved[1] !== undefined) process.env.DDPO_AESTHETIC_CLIP = saved[1];
    }
    expect(() => rewardByName(`aesthetic:${HEAD}`)).toThrow(/aesthetic:<head\.safetensors>:<CLIP folder>/);
  });

  test("a CLIP whose embeddings are not 768 wide is refused", () => {
    expect(() => rewardByName(`aesthetic:${HEAD}:${EMOJI_CLIP_DIR}`)).toThrow(
      /the head takes 768-wide image embeddings, the CLIP at .*emoji-clip gives 64 \(the LAION head needs CLIP ViT-L\/14/,
    );
  });

  test("scores images through a 768-wide CLIP folder: the head on its normalised image embeddings", async () => {
    // A small random CLIP with ViT-L/14's projection width stands in for the real weights.
    const tok = ClipBpeTokenizer.load(join(FIXTURES, "clip_bpe_tiny"));
    const enc = { hidden_act: "quick_gelu", layer_norm_eps: 1e-5, num_hidden_layers: 1, num_attention_heads: 2 };
    const config = {
      projection_dim: 768,
      logit_scale_init_value: 2.6592,
      text_config: { ...enc, vocab_size: 914, max_position_embeddings: 77, hidden_size: 16, intermediate_size: 32 },
      vision_config: { ...enc, hidden_size: 16, intermediate_size: 32, image_size: 8, patch_size: 4, num_channels: 3 },
    };
    const dir = join(tmp, "clip-768");
    const model = ClipModel.create(engine, config, tok, 11);
    model.save(dir);
    model.close();
    const fn = aesthetic({ headFile: HEAD, clipDir: dir });
    expect(fn.name).toBe(`aesthetic:${HEAD}:${dir}`);
    expect(fn.description).toContain(dir);
    const images = Uint8Array.from({ length: 3 * 12 * 10 * 3 }, (_, i) => (i * 53) % 256);
    const size = { height: 12, width: 10 };
    const scores = await fn.score(images, size, ["a", "b", "c"]);
    const expected = AestheticHead.load(HEAD).forward(sharedClip(dir).embedRgb(images, size));
    expect(Array.from(scores)).toEqual(Array.from(expected));
    // Per-image: a batch scores each image as alone.
    const one = await fn.score(images.subarray(12 * 10 * 3, 2 * 12 * 10 * 3), size, ["b"]);
    expect(one[0]!).toBeCloseTo(scores[1]!, 9);
  });
});

describe("clip_alignment reward (emoji CLIP)", () => {
  test("is listed and named with its CLIP", () => {
    const names = listRewards().map((r) => r.name);
    expect(names).toContain("clip_alignment[:raw][:<CLIP folder>]");
    expect(names).toContain("aesthetic[:<head.safetensors>:<CLIP folder>]");
    const fn = rewardByName("clip_alignment");
    expect(fn.name).toBe("clip_alignment");
    expect(fn.description).toContain(EMOJI_CLIP_DIR);
    expect(fn.description).toContain("CLIPScore");
    expect(rewardByName(`clip_alignment:raw:${EMOJI_CLIP_DIR}`).name).toBe(`clip_alignment:raw:${EMOJI_CLIP_DIR}`);
    expect(rewardByName("0.5*clip_alignment+jpeg_compressibility").name).toBe(
      "0.5*clip_alignment+1*jpeg_compressibility",
    );
    expect(() => rewardByName("clip_alignment:raw:/no/such/clip")).toThrow(
      /clip_alignment:raw:\/no\/such\/clip: CLIP \/no\/such\/clip is not a CLIP folder/,
    );
  });

  test("raw is the zero-shot cosine; CLIPScore is 100 max(cos, 0); true captions beat shuffled ones", async () => {
    const dataset = await loadEmojiDataset();
    // Eight images with distinct captions, spread over the dataset.
    const picks: number[] = [];
    const seen = new Set<string>();
    for (let k = 0; picks.length < 8; k++) {
      const i = (k * 97) % dataset.records.length;
      if (!seen.has(dataset.records[i]!.caption)) picks.push(i);
      seen.add(dataset.records[i]!.caption);
    }
    const captions = picks.map((i) => dataset.records[i]!.caption);
    const per = dataset.size * dataset.size * 3;
    const images = new Uint8Array(picks.length * per);
    picks.forEach((i, b) => {
      images.set(dataset.images.subarray(i * per, (i + 1) * per), b * per);
    });
    const size = { height: dataset.size, width: dataset.size };
    const raw = await rewardByName("clip_alignment:raw").score(images, size, captions);
    const clipscore = await rewardByName("clip_alignment").score(images, size, captions);
    const sims = new ZeroShotClassifier(sharedClip(EMOJI_CLIP_DIR), captions).similarities(
      toFloatNCHW(dataset.images, picks, dataset.size),
    );
    for (let b = 0; b < picks.length; b++) {
      expect(raw[b]!).toBeCloseTo(sims[b * picks.length + b]!, 5);
      expect(clipscore[b]!).toBeCloseTo(100 * Math.max(raw[b]!, 0), 9);
    }
    const shuffled = await rewardByName("clip_alignment:raw").score(images, size, [...captions.slice(1), captions[0]!]);
    const mean = (x: Float64Array) => x.reduce((a, v) => a + v, 0) / x.length;
    console.log(`clip_alignment raw: true captions ${mean(raw).toFixed(3)}, shifted ${mean(shuffled).toFixed(3)}`);
    expect(mean(raw)).toBeGreaterThan(mean(shuffled) + 0.1);
  });

  test("other image sizes are resized and cropped; empty prompts score; long ones are truncated, with a warning", async () => {
    const fn = rewardByName("clip_alignment:raw");
    const images = Uint8Array.from({ length: 2 * 48 * 40 * 3 }, (_, i) => (i * 31) % 256);
    const warn = spyOn(console, "warn").mockImplementation(() => {});
    const long = `cat face ${"very ".repeat(30)}`;
    const s = await fn.score(images, { height: 48, width: 40 }, ["", long]);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toMatch(/is 18 tokens over the CLIP's 16; truncated/);
    warn.mockRestore();
    expect(s.every((v) => Number.isFinite(v) && v >= -1 && v <= 1)).toBe(true);
    await expect(fn.score(images, { height: 48, width: 40 }, ["one prompt"])).rejects.toThrow(
      /expected 1 x 48 x 40 x 3/,
    );
  });
});

test("a DDPO epoch trains on clip_alignment (16x16 drawings resized to the CLIP's 32x32)", async () => {
  const names = ["cat face", "tiger", "frog", "dog face"];
  const model = tinyModel(engine, names, 5);
  const config = tinyDdpoConfig({ steps: 3, lora: { rank: 2, alpha: 2 }, lr: 1e-2 });
  const trainer = new DdpoTrainer(
    engine,
    model,
    config,
    rewardByName("clip_alignment"),
    promptSetFromList("t", "t", names),
  );
  const before = trainer.lora!.params.values.read();
  const { report, stats } = await runLocalEpoch(trainer);
  expect(stats.pairs).toBeGreaterThan(0);
  expect(report.rewardMean).toBeGreaterThanOrEqual(0);
  expect(report.rewardMean).toBeLessThanOrEqual(100);
  expect(Number.isFinite(report.loss)).toBe(true);
  // The adapters moved: the rewards differed, so the advantages did and the update is not zero.
  expect(trainer.lora!.params.values.read().some((v, i) => v !== before[i])).toBe(true);
  trainer.close();
  model.close();
});
