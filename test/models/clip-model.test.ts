// The emoji CLIP's container: a transformers-layout folder that round-trips bit for bit, a config
// whose pooling rule misses the tokenizer's <eos> refused, and forward-only embeddings that equal
// the graph's features, normalised.
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { WordTokenizer } from "../../services/lib/data/tokenizer.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";
import { Graph } from "../../services/lib/models/graph.ts";
import { EMOJI_CLIP_SIZES, emojiClipConfig } from "../../services/lib/models/presets.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "clip-model-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

const sizes = { ...EMOJI_CLIP_SIZES, width: 16, visionLayers: 1, textLayers: 1, projectionDim: 8, imageSize: 8 };
const tokenizer = WordTokenizer.fromCaptions(["cat face", "tiger", "dog face"], { maxLength: 8, eosLast: true });

test("save/load round trip in transformers' layout; embeddings are the normalised features", () => {
  const model = ClipModel.create(engine, emojiClipConfig(tokenizer, sizes), tokenizer, 5);
  const pixels = Float32Array.from({ length: 2 * 3 * 8 * 8 }, (_, i) => Math.sin(i * 0.37));
  const texts = ["cat face", "tiger", "zebra"];
  const img = model.embedImages(pixels, 1);
  const txt = model.embedTexts(texts, 2);
  expect(img.length).toBe(2 * 8);
  expect(txt.length).toBe(3 * 8);
  for (let r = 0; r < 3; r++) expect(Math.hypot(...txt.subarray(r * 8, r * 8 + 8))).toBeCloseTo(1, 6);

  // The same as one graph's features, normalised.
  const arena = engine.arena();
  const g = new Graph(engine, model.source({ frozen: true }), arena);
  const f = model.textFeatures(g, texts).read();
  const n0 = Math.hypot(...f.subarray(0, 8));
  expect(Math.abs(txt[3]! - f[3]! / n0)).toBeLessThan(1e-6);
  g.dispose();
  arena.close();

  const out = join(dir, "clip");
  model.save(out);
  for (const f of ["config.json", "model.safetensors", "preprocessor_config.json", "tokenizer/vocab.json"]) {
    expect(existsSync(join(out, f))).toBe(true);
  }
  const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  expect(config.text_config.eos_token_id).toBe(tokenizer.eosId);
  const loaded = ClipModel.load(engine, out);
  expect(Buffer.from(loaded.params.values.read().buffer).equals(Buffer.from(model.params.values.read().buffer))).toBe(
    true,
  );
  expect([...loaded.embedImages(pixels)]).toEqual([...img]);
  expect(loaded.logitScale).toBeCloseTo(Math.exp(2.6592), 4);
  loaded.close();
  model.close();
});

test("a text config that pools elsewhere than the tokenizer's <eos> is refused", () => {
  const config = emojiClipConfig(tokenizer, sizes);
  (config.text_config as Record<string, unknown>).eos_token_id = 2; // legacy rule: argmax(ids)
  const specialsFirst = WordTokenizer.fromCaptions(["cat face"], { maxLength: 8 });
  expect(() => ClipModel.create(engine, emojiClipConfig(specialsFirst, sizes), specialsFirst, 1)).toThrow(
    /pools at the highest token id/,
  );
  // With <eos> as the highest id, the legacy argmax rule pools at it too.
  ClipModel.create(engine, config, tokenizer, 1).close();
});
