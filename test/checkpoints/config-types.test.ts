// Config files load in transformers / diffusers, whose config classes check field types strictly
// (transformers 5.18 refuses `initializer_factor: 1`, "expected float, got int"). Every config this
// project writes has, field by field, the JSON type the Python libraries wrote in the fixtures.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configJson, pipelinePaths, writeJsonConfig } from "../../services/lib/checkpoints/model-folder.ts";
import { WordTokenizer } from "../../services/lib/data/tokenizer.ts";
import {
  EMOJI_SCHEDULER,
  emojiClipConfig,
  emojiTextEncoderConfig,
  emojiUNetConfig,
} from "../../services/lib/models/presets.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const SHIPPED = join(import.meta.dir, "..", "..", "models", "emoji-base");
const dir = mkdtempSync(join(tmpdir(), "config-types-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Kind = "int" | "float" | "string" | "bool" | "null" | "array" | "object";

/** The JSON type of every field of a config text, by dotted path; numbers as Python reads them. */
function fieldKinds(text: string): Map<string, Kind> {
  const kinds = new Map<string, Kind>();
  const tree = JSON.parse(text, (_key, value, context?: { source?: string }) => {
    if (typeof value !== "number") return value;
    return { number: /[.eE]/.test(context?.source ?? "") ? "float" : "int" };
  });
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) {
      kinds.set(path, "array");
      for (const [i, x] of v.entries()) walk(x, `${path}.${i}`);
    } else if (v !== null && typeof v === "object" && "number" in v) kinds.set(path, (v as { number: Kind }).number);
    else if (v !== null && typeof v === "object") {
      if (path) kinds.set(path, "object");
      for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}.${k}` : k);
    } else kinds.set(path, v === null ? "null" : typeof v === "boolean" ? "bool" : "string");
  };
  walk(tree, "");
  return kinds;
}

/** Fields both configs have whose JSON types differ (null on either side is a value, not a type). */
function typeMismatches(mine: string, reference: string): string[] {
  const a = fieldKinds(mine);
  const b = fieldKinds(reference);
  const out: string[] = [];
  for (const [path, kind] of a) {
    const ref = b.get(path);
    if (ref === undefined || ref === "null" || kind === "null") continue;
    if (ref !== kind) out.push(`${path}: ${kind}, the reference has ${ref}`);
  }
  return out;
}

function written(name: string, config: Record<string, unknown>): string {
  const path = join(dir, name);
  writeJsonConfig(path, config);
  return readFileSync(path, "utf8");
}

const fixture = (name: string) => readFileSync(join(FIXTURES, name, "config.json"), "utf8");

// diffusers' DDIMScheduler signature: these fields are typed float, these int.
const SCHEDULER_FLOATS = ["beta_start", "beta_end", "clip_sample_range"];
const SCHEDULER_INTS = ["num_train_timesteps", "steps_offset"];

describe("config field types match the Python libraries'", () => {
  test("the kinds reader tells 1 from 1.0 and 1e-05", () => {
    const k = fieldKinds('{"a": 1, "b": 1.0, "c": 1e-05, "d": {"e": [2, 0.5]}, "f": null}');
    expect(Object.fromEntries(k)).toEqual({
      a: "int",
      b: "float",
      c: "float",
      d: "object",
      "d.e": "array",
      "d.e.0": "int",
      "d.e.1": "float",
      f: "null",
    });
  });

  test("writing keeps values and lays the text out as Python's json does", () => {
    const config = { b: 1, initializer_factor: 1, layer_norm_eps: 1e-5, a: { dropout: 0, list: [] }, n: null };
    const text = configJson(config);
    expect(JSON.parse(text)).toEqual(config);
    expect(text).toBe(
      '{\n  "a": {\n    "dropout": 0.0,\n    "list": []\n  },\n  "b": 1,\n  "initializer_factor": 1.0,\n  "layer_norm_eps": 0.00001,\n  "n": null\n}',
    );
  });

  test("UNet config vs diffusers' (unet_tiny)", () => {
    const mine = written("unet.json", emojiUNetConfig());
    expect(typeMismatches(mine, fixture("unet_tiny"))).toEqual([]);
    expect(fieldKinds(mine).get("dropout")).toBe("float");
    expect(fieldKinds(mine).get("mid_block_scale_factor")).toBe("int");
  });

  test("CLIP text encoder config vs transformers' (clip_text_tiny)", () => {
    const mine = written("text.json", emojiTextEncoderConfig(100));
    expect(typeMismatches(mine, fixture("clip_text_tiny"))).toEqual([]);
    expect(fieldKinds(mine).get("initializer_factor")).toBe("float");
  });

  test("CLIPModel config vs transformers' (clip_tiny), nested configs included", () => {
    const tokenizer = WordTokenizer.fromCaptions(["cat face"], { eosLast: true });
    const mine = written("clip.json", emojiClipConfig(tokenizer));
    expect(typeMismatches(mine, fixture("clip_tiny"))).toEqual([]);
    const kinds = fieldKinds(mine);
    expect(kinds.get("vision_config.layer_norm_eps")).toBe("float");
    expect(kinds.get("text_config.initializer_factor")).toBe("float");
    expect(kinds.get("vision_config.patch_size")).toBe("int");
  });

  test("scheduler config: diffusers' float and int fields", () => {
    const kinds = fieldKinds(written("scheduler.json", EMOJI_SCHEDULER));
    for (const k of SCHEDULER_FLOATS) expect(`${k}: ${kinds.get(k)}`).toBe(`${k}: float`);
    for (const k of SCHEDULER_INTS) expect(`${k}: ${kinds.get(k)}`).toBe(`${k}: int`);
  });

  test("the shipped models/emoji-base configs", () => {
    const p = pipelinePaths(SHIPPED);
    const read = (path: string) => readFileSync(path, "utf8");
    expect(typeMismatches(read(p.unetConfig), fixture("unet_tiny"))).toEqual([]);
    expect(typeMismatches(read(p.textEncoderConfig), fixture("clip_text_tiny"))).toEqual([]);
    const kinds = fieldKinds(read(p.schedulerConfig));
    for (const k of SCHEDULER_FLOATS) expect(`${k}: ${kinds.get(k)}`).toBe(`${k}: float`);
  });
});
