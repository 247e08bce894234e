// Checkpoints into and out of FlatParameters (strict names and shapes, text_model. prefix), JSON
// configs, the scheduler config and the diffusers pipeline folder.
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { FlatParameters, type ParameterSpec } from "../../gpu-core/parameters.ts";
import {
  CLIP_TEXT_IGNORED,
  CLIP_TEXT_PREFIXES,
  ConfigError,
  loadIntoParameters,
  parseSchedulerConfig,
  readJsonConfig,
  readPipeline,
  readSchedulerConfig,
  saveParameters,
  savePipeline,
} from "../../services/lib/checkpoints/model-folder.ts";
import { readSafetensors, SafetensorsReader, writeSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import { expectMismatch } from "./expect-mismatch.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const UNET = join(FIXTURES, "unet_tiny", "diffusion_pytorch_model.safetensors");
const UNET_CONFIG = join(FIXTURES, "unet_tiny", "config.json");
const CLIP = join(FIXTURES, "clip_text_tiny", "model.safetensors");
const CLIP_CONFIG = join(FIXTURES, "clip_text_tiny", "config.json");

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "model-folder-test-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

function specsOf(path: string): ParameterSpec[] {
  using r = SafetensorsReader.open(path);
  return [...r.tensors.values()].map((t) => ({ name: t.name, shape: t.shape }));
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** A deterministic shuffle, so views are laid out in another order than the file's. */
function shuffled<T>(xs: readonly T[]): T[] {
  const out = [...xs];
  let s = 12345;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe("loadIntoParameters / saveParameters", () => {
  test("the UNet fixture loads into every named view bit for bit, and saves back byte for byte", () => {
    const params = new FlatParameters(engine, shuffled(specsOf(UNET)));
    const report = loadIntoParameters(params, UNET);
    expect(report.metadata).toEqual({ format: "pt" });
    expect(report.mapping.size).toBe(params.entries.length);
    const { tensors } = readSafetensors(UNET);
    for (const [name, t] of tensors) {
      const got = params.value(name).read();
      expect(
        Buffer.compare(Buffer.from(got.buffer), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
      ).toBe(0);
    }
    const out = join(dir, "unet-resaved.safetensors");
    const hash = saveParameters(params, out, { format: "pt" });
    expect(hash).toBe(sha256(UNET));
    expect(Buffer.compare(readFileSync(out), readFileSync(UNET))).toBe(0);
    params.close();
  });

  test("missing, unexpected and mis-shaped names are refused together, and nothing is loaded", () => {
    const specs = specsOf(CLIP);
    const dropped = specs.filter((s) => s.name !== "final_layer_norm.bias");
    const reshaped = dropped.map((s) =>
      s.name === "embeddings.token_embedding.weight" ? { ...s, shape: [32, 64] } : s,
    );
    const params = new FlatParameters(engine, [...reshaped, { name: "extra.weight", shape: [3, 4] }]);
    engine.fill(params.values, 7);
    const err = expectMismatch(() => loadIntoParameters(params, CLIP));
    expect(err.missing).toEqual(["extra.weight [3, 4]"]);
    expect(err.unexpected).toEqual(["final_layer_norm.bias [32]"]);
    expect(err.mismatched).toEqual(["embeddings.token_embedding.weight: checkpoint [64, 32] vs model [32, 64]"]);
    expect(err.message).toContain(`${CLIP} does not fit the model:`);
    expect(err.message).toContain("missing from the checkpoint (1):\n    extra.weight [3, 4]");
    expect(err.message).toContain("unexpected in the checkpoint (1):\n    final_layer_norm.bias [32]");
    expect(err.message).toContain("shape or dtype mismatch (1):");
    expect(params.values.read().every((v) => v === 7)).toBe(true);
    params.close();
  });

  test("each kind of mismatch alone", () => {
    const specs = specsOf(CLIP);
    const missing = new FlatParameters(engine, [...specs, { name: "x", shape: [1] }]);
    expect(expectMismatch(() => loadIntoParameters(missing, CLIP)).message).toMatch(
      /missing from the checkpoint \(1\):\n {4}x \[1\]$/,
    );
    missing.close();
    const unexpected = new FlatParameters(engine, specs.slice(1));
    expect(expectMismatch(() => loadIntoParameters(unexpected, CLIP)).unexpected).toEqual([
      "embeddings.position_embedding.weight [16, 32]",
    ]);
    unexpected.close();
    const shaped = new FlatParameters(
      engine,
      specs.map((s) => (s.name === "final_layer_norm.weight" ? { ...s, shape: [1, 32] } : s)),
    );
    expect(expectMismatch(() => loadIntoParameters(shaped, CLIP)).mismatched).toEqual([
      "final_layer_norm.weight: checkpoint [32] vs model [1, 32]",
    ]);
    shaped.close();
  });

  test("long lists are cut in the message but kept whole on the error", () => {
    const params = new FlatParameters(engine, [{ name: "only", shape: [1] }]);
    const err = expectMismatch(() => loadIntoParameters(params, UNET));
    expect(err.unexpected.length).toBe(324);
    expect(err.message).toContain("... and 304 more");
    params.close();
  });

  test("text_model. prefix: accepted with and without it, and in both directions", () => {
    const specs = specsOf(CLIP);
    const plain = new FlatParameters(engine, specs);
    loadIntoParameters(plain, CLIP);
    const expected = plain.values.read();

    // A checkpoint with the prefix, as Stable Diffusion 1.x ships it, plus the position_ids buffer.
    const prefixed = join(dir, "text_model.safetensors");
    const { tensors } = readSafetensors(CLIP);
    const withPrefix = new Map([...tensors].map(([n, t]) => [`text_model.${n}`, { shape: t.shape, data: t.data }]));
    writeSafetensors(prefixed, withPrefix);
    const target = new FlatParameters(engine, shuffled(specs));
    const strictErr = expectMismatch(() => loadIntoParameters(target, prefixed));
    expect(strictErr.missing.length).toBe(specs.length);
    expect(strictErr.unexpected.length).toBe(specs.length);
    const report = loadIntoParameters(target, prefixed, { stripPrefix: CLIP_TEXT_PREFIXES });
    expect(report.mapping.get("text_model.final_layer_norm.weight")).toBe("final_layer_norm.weight");
    for (const e of plain.entries)
      expect(target.value(e.name).read()).toEqual(expected.subarray(e.offset, e.offset + e.numel));

    const withBuffer = join(dir, "text_model_position_ids.safetensors");
    writeSafetensors(
      withBuffer,
      new Map<string, { shape: readonly number[]; data: Float32Array | Int32Array }>([
        ...withPrefix,
        ["text_model.embeddings.position_ids", { shape: [1, 16], data: Int32Array.from({ length: 16 }, (_, i) => i) }],
      ]),
    );
    expect(
      expectMismatch(() => loadIntoParameters(target, withBuffer, { stripPrefix: CLIP_TEXT_PREFIXES })).unexpected,
    ).toEqual(["text_model.embeddings.position_ids [1, 16]"]);
    const ignoredReport = loadIntoParameters(target, withBuffer, {
      stripPrefix: CLIP_TEXT_PREFIXES,
      ignore: CLIP_TEXT_IGNORED,
    });
    expect(ignoredReport.ignored).toEqual(["text_model.embeddings.position_ids"]);

    // Parameters named with the prefix accept an unprefixed checkpoint too.
    const prefixedParams = new FlatParameters(
      engine,
      specs.map((s) => ({ ...s, name: `text_model.${s.name}` })),
    );
    loadIntoParameters(prefixedParams, CLIP, { stripPrefix: CLIP_TEXT_PREFIXES });
    expect(prefixedParams.values.read()).toEqual(expected);

    // saveParameters can write the prefix back.
    const resaved = join(dir, "resaved-prefixed.safetensors");
    saveParameters(plain, resaved, {}, { prefix: "text_model." });
    using resavedReader = SafetensorsReader.open(resaved);
    expect(resavedReader.names[0]).toBe("text_model.embeddings.position_embedding.weight");
    for (const p of [plain, target, prefixedParams]) p.close();
  });

  test("a checkpoint naming the same parameter twice, or an integer tensor, is refused", () => {
    const both = join(dir, "both.safetensors");
    writeSafetensors(both, {
      w: { shape: [2], data: new Float32Array([1, 2]) },
      "text_model.w": { shape: [2], data: new Float32Array([3, 4]) },
      n: { shape: [2], data: new Int32Array([1, 2]) },
    });
    const params = new FlatParameters(engine, [
      { name: "w", shape: [2] },
      { name: "n", shape: [2] },
    ]);
    const err = expectMismatch(() => loadIntoParameters(params, both, { stripPrefix: ["text_model."] }));
    expect(err.mismatched).toEqual([
      "n: dtype I32 cannot fill a float32 parameter",
      "w: parameter 'w' is already given by 'text_model.w'",
    ]);
    params.close();
  });
});

describe("configs", () => {
  test("readJsonConfig reads objects and explains what is wrong otherwise", () => {
    expect(readJsonConfig(CLIP_CONFIG).hidden_size).toBe(32);
    const missing = join(dir, "nope.json");
    expect(() => readJsonConfig(missing)).toThrow(`${missing}: config file does not exist`);
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{ not json");
    expect(() => readJsonConfig(bad)).toThrow(new RegExp(`^${bad}: not valid JSON: `));
    const list = join(dir, "list.json");
    writeFileSync(list, "[1, 2]");
    expect(() => readJsonConfig(list)).toThrow(`${list}: must hold a JSON object`);
    expect(() => readJsonConfig(dir)).toThrow(ConfigError);
  });

  test("scheduler config: defaults filled, Stable Diffusion's accepted, unsupported settings refused", () => {
    const sd = parseSchedulerConfig({
      _class_name: "PNDMScheduler",
      beta_end: 0.012,
      beta_schedule: "scaled_linear",
      beta_start: 0.00085,
      clip_sample: false,
      num_train_timesteps: 1000,
      set_alpha_to_one: false,
      skip_prk_steps: true,
      steps_offset: 1,
    });
    expect(sd.beta_schedule).toBe("scaled_linear");
    expect(sd.prediction_type).toBe("epsilon");
    expect(sd.skip_prk_steps).toBe(true);
    expect(parseSchedulerConfig({}).num_train_timesteps).toBe(1000);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ beta_schedule: "squaredcos_cap_v2" }, /beta_schedule "squaredcos_cap_v2" is not supported/],
      [{ prediction_type: "v_prediction" }, /prediction_type "v_prediction" is not supported \(only "epsilon"\)/],
      [{ beta_start: 0.02, beta_end: 0.01 }, /beta_end \(0.01\) is below beta_start \(0.02\)/],
      [{ num_train_timesteps: 0 }, /num_train_timesteps must be a positive integer, got 0/],
      [{ clip_sample: "yes" }, /clip_sample must be a boolean/],
      [{ trained_betas: [0.1] }, /trained_betas is not supported/],
      [{ rescale_betas_zero_snr: true }, /rescale_betas_zero_snr is not supported/],
    ];
    for (const [raw, message] of bad) {
      expect(() => parseSchedulerConfig(raw, "sched.json")).toThrow(message);
      expect(() => parseSchedulerConfig(raw, "sched.json")).toThrow(/^sched\.json: /);
    }
  });
});

describe("pipeline folder", () => {
  test("save, read back and load; overwriting swaps the whole folder", () => {
    const unet = new FlatParameters(engine, specsOf(UNET));
    loadIntoParameters(unet, UNET);
    const text = new FlatParameters(engine, specsOf(CLIP));
    loadIntoParameters(text, CLIP);
    const tokenizer = join(dir, "tokenizer-src");
    mkdirSync(tokenizer, { recursive: true });
    writeFileSync(join(tokenizer, "vocab.json"), '{"<pad>": 0, "cat": 1}\n');
    writeFileSync(join(tokenizer, "tokenizer_config.json"), "{}\n");

    const root = join(dir, "pipeline");
    const scheduler = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, clip_sample: false };
    const parts = {
      unet: { config: readJsonConfig(UNET_CONFIG), params: unet },
      textEncoder: { config: readJsonConfig(CLIP_CONFIG), params: text },
      scheduler,
      tokenizerFrom: tokenizer,
    };
    const manifest = savePipeline(root, parts);
    expect(Object.keys(manifest.files).sort()).toEqual([
      "model_index.json",
      "scheduler/scheduler_config.json",
      "text_encoder/config.json",
      "text_encoder/model.safetensors",
      "tokenizer/tokenizer_config.json",
      "tokenizer/vocab.json",
      "unet/config.json",
      "unet/diffusion_pytorch_model.safetensors",
    ]);
    for (const [rel, hash] of Object.entries(manifest.files)) expect(sha256(join(root, rel))).toBe(hash);
    // The weights are the fixtures' bytes, so the folder is what diffusers/transformers would load.
    expect(manifest.files["unet/diffusion_pytorch_model.safetensors"]).toBe(sha256(UNET));
    expect(manifest.files["text_encoder/model.safetensors"]).toBe(sha256(CLIP));

    const folder = readPipeline(root);
    expect(folder.unetConfig).toEqual(readJsonConfig(UNET_CONFIG));
    expect(folder.textEncoderConfig.architectures).toEqual(["CLIPTextModel"]);
    expect(folder.scheduler.beta_schedule).toBe("scaled_linear");
    expect(folder.scheduler._class_name).toBe("DDIMScheduler");
    expect(folder.tokenizerFiles).toEqual(["tokenizer_config.json", "vocab.json"]);
    expect(folder.modelIndex).toEqual({
      _class_name: "DDPOPipeline",
      scheduler: ["diffusers", "DDIMScheduler"],
      text_encoder: ["transformers", "CLIPTextModel"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
    });
    // Configs are written as diffusers writes them: sorted keys, 2-space indent, final newline.
    const schedText = readFileSync(folder.paths.schedulerConfig, "utf8");
    expect(schedText.startsWith('{\n  "_class_name": "DDIMScheduler",\n  "beta_end": 0.012,')).toBe(true);
    expect(schedText.endsWith("}\n")).toBe(true);
    expect(readSchedulerConfig(folder.paths.schedulerConfig)).toEqual(folder.scheduler);

    const reloaded = new FlatParameters(engine, specsOf(UNET));
    loadIntoParameters(reloaded, folder.paths.unetWeights);
    expect(reloaded.values.read()).toEqual(unet.values.read());

    // Overwrite with a changed model and no tokenizer: the old folder is replaced as a whole.
    engine.fill(unet.values, 0.5);
    savePipeline(root, { ...parts, tokenizerFrom: undefined, modelIndex: false });
    const again = readPipeline(root);
    expect(again.tokenizerFiles).toEqual([]);
    expect(again.modelIndex).toBeNull();
    loadIntoParameters(reloaded, again.paths.unetWeights);
    expect(reloaded.values.read().every((v) => v === 0.5)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith(".pipeline"))).toEqual([]);

    // A bad scheduler is refused before anything is written.
    expect(() => savePipeline(root, { ...parts, scheduler: { prediction_type: "sample" } })).toThrow(/prediction_type/);
    expect(readPipeline(root).scheduler.beta_schedule).toBe("scaled_linear");
    for (const p of [unet, text, reloaded]) p.close();
  });

  test("readPipeline names what is missing", () => {
    const root = join(dir, "partial");
    expect(() => readPipeline(root)).toThrow(`${root}: pipeline folder does not exist`);
    mkdirSync(join(root, "unet"), { recursive: true });
    writeFileSync(join(root, "unet", "config.json"), "{}");
    expect(() => readPipeline(root)).toThrow(`${root}: pipeline folder lacks unet/diffusion_pytorch_model.safetensors`);
  });
});
