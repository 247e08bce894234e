// LoRA adapter files in peft's layout: names, adapter_config.json, round trip and refusals.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ADAPTER_WEIGHTS,
  isTargetModule,
  type LoraWeights,
  loadLora,
  loraTensorNames,
  saveLora,
} from "../../services/lib/checkpoints/lora.ts";
import {
  readSafetensors,
  SafetensorsReader,
  type TensorToWrite,
  writeSafetensors,
} from "../../services/lib/checkpoints/safetensors.ts";
import { expectMismatch } from "./expect-mismatch.ts";

const dir = mkdtempSync(join(tmpdir(), "lora-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";
const OUT = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0";
const TARGETS = ["to_q", "to_k", "to_v", "to_out.0"];

function random(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.random() - 0.5);
}

function adapter(rank: number, inF: number, outF: number): LoraWeights {
  return {
    loraA: { shape: [rank, inF], data: random(rank * inF) },
    loraB: { shape: [outF, rank], data: random(outF * rank) },
  };
}

function folder(name: string): string {
  return join(dir, name, ADAPTER_WEIGHTS);
}

describe("names", () => {
  test("peft tensor names and target matching", () => {
    expect(loraTensorNames(Q)).toEqual({
      a: `base_model.model.${Q}.lora_A.weight`,
      b: `base_model.model.${Q}.lora_B.weight`,
    });
    expect(isTargetModule(Q, TARGETS)).toBe(true);
    expect(isTargetModule(OUT, TARGETS)).toBe(true);
    expect(isTargetModule("down_blocks.1.attentions.0.proj_in", TARGETS)).toBe(false);
    expect(isTargetModule("x.not_to_q", TARGETS)).toBe(false);
    expect(isTargetModule(Q, ".*attn1\\.to_q")).toBe(true);
    expect(isTargetModule(Q, "attn1\\.to_q")).toBe(false); // a regex must match the whole name
  });
});

describe("save and load", () => {
  test("round trip is bit-identical, with peft's names and adapter_config.json", () => {
    const entries = new Map([
      [Q, adapter(4, 32, 32)],
      [OUT, adapter(4, 32, 32)],
    ]);
    const file = folder("round-trip");
    const saved = saveLora(file, entries, { rank: 4, alpha: 8, targetModules: TARGETS, baseModel: "ddpo/emoji-unet" });
    expect(saved.configPath).toBe(join(dir, "round-trip", "adapter_config.json"));

    const { tensors, metadata } = readSafetensors(file);
    expect(metadata).toEqual({ format: "pt" });
    expect([...tensors.keys()].sort()).toEqual(
      [loraTensorNames(Q).a, loraTensorNames(Q).b, loraTensorNames(OUT).a, loraTensorNames(OUT).b].sort(),
    );
    const config = JSON.parse(readFileSync(saved.configPath, "utf8"));
    expect(config).toMatchObject({
      peft_type: "LORA",
      r: 4,
      lora_alpha: 8,
      target_modules: ["to_k", "to_out.0", "to_q", "to_v"],
      base_model_name_or_path: "ddpo/emoji-unet",
      bias: "none",
      use_dora: false,
      use_rslora: false,
    });

    const loaded = loadLora(file, {
      baseShapes: new Map<string, [number, number]>([
        [Q, [32, 32]],
        [OUT, [32, 32]],
        ["down_blocks.1.attentions.0.proj_in", [32, 32]], // not targeted: needs no adapter
      ]),
    });
    expect([...loaded.adapters.keys()]).toEqual([Q, OUT].sort());
    for (const [module, w] of entries) {
      const got = loaded.adapters.get(module)!;
      expect(got.rank).toBe(4);
      expect(got.alpha).toBe(8);
      expect(got.scaling).toBe(2);
      expect(got.loraA.shape).toEqual([4, 32]);
      expect(got.loraB.shape).toEqual([32, 4]);
      expect(Buffer.compare(Buffer.from(got.loraA.data.buffer), Buffer.from(w.loraA.data.buffer))).toBe(0);
      expect(Buffer.compare(Buffer.from(got.loraB.data.buffer), Buffer.from(w.loraB.data.buffer))).toBe(0);
    }
  });

  test("saving refuses untargeted modules, wrong ranks and prefixed names", () => {
    const opts = { rank: 4, alpha: 4, targetModules: TARGETS };
    expect(() => saveLora(folder("bad"), { conv_in: adapter(4, 3, 16) }, opts)).toThrow(
      "LoRA module 'conv_in' is not matched by targetModules [to_q, to_k, to_v, to_out.0]",
    );
    expect(() => saveLora(folder("bad"), { [Q]: adapter(2, 32, 32) }, opts)).toThrow(
      /lora_A must be \[4, in\] and lora_B \[out, 4\], got \[2, 32\] and \[32, 2\]/,
    );
    expect(() => saveLora(folder("bad"), { [`base_model.model.${Q}`]: adapter(4, 32, 32) }, opts)).toThrow(
      /without 'base_model.model.'/,
    );
    expect(() => saveLora(folder("bad"), {}, opts)).toThrow(/no LoRA modules/);
    expect(() => saveLora(folder("bad"), { [Q]: adapter(4, 32, 32) }, { ...opts, rank: 0 })).toThrow(
      /positive integer/,
    );
  });

  test("rank_pattern / alpha_pattern and use_rslora are honoured", () => {
    const file = folder("patterns");
    saveLora(file, { [Q]: adapter(4, 8, 8) }, { rank: 4, alpha: 4, targetModules: TARGETS });
    const { tensors } = readSafetensors(file);
    const names = loraTensorNames(OUT);
    const merged = new Map([
      ...[...tensors].map(([n, t]) => [n, { shape: t.shape, data: t.data }] as const),
      [names.a, { shape: [2, 8], data: random(16) }],
      [names.b, { shape: [8, 2], data: random(16) }],
    ]);
    writeSafetensors(file, merged);
    const configPath = join(dir, "patterns", "adapter_config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    writeFileSync(
      configPath,
      JSON.stringify({
        ...config,
        rank_pattern: { "attn2.to_out.0": 2 },
        alpha_pattern: { "to_out.0": 1 },
        use_rslora: true,
      }),
    );
    const loaded = loadLora(file);
    expect(loaded.adapters.get(Q)!.scaling).toBe(4 / 2);
    expect(loaded.adapters.get(OUT)!.rank).toBe(2);
    expect(loaded.adapters.get(OUT)!.scaling).toBe(1 / Math.sqrt(2));
  });
});

describe("loading refuses", () => {
  function saved(name: string): string {
    const file = folder(name);
    saveLora(file, { [Q]: adapter(4, 32, 32) }, { rank: 4, alpha: 4, targetModules: TARGETS });
    return file;
  }

  function rewrite(file: string, edit: (m: Map<string, TensorToWrite>) => void): void {
    const m = new Map(
      [...readSafetensors(file).tensors].map(([n, t]): [string, TensorToWrite] => [
        n,
        { shape: t.shape, data: t.data },
      ]),
    );
    edit(m);
    writeSafetensors(file, m);
  }

  test("a missing half, an unexpected tensor, a wrong rank", () => {
    const file = saved("halves");
    rewrite(file, (m) => {
      m.delete(loraTensorNames(Q).b);
      m.set("base_model.model.conv_in.weight", { shape: [1], data: new Float32Array(1) });
    });
    const err = expectMismatch(() => loadLora(file));
    expect(err.missing).toEqual([loraTensorNames(Q).b]);
    expect(err.unexpected).toEqual(["base_model.model.conv_in.weight"]);

    const ranked = saved("rank");
    rewrite(ranked, (m) => m.set(loraTensorNames(Q).a, { shape: [3, 32], data: random(96) }));
    expect(expectMismatch(() => loadLora(ranked)).mismatched[0]).toMatch(
      /rank 4 needs lora_A \[4, in\] and lora_B \[out, 4\]/,
    );
  });

  test("an adapter that does not fit the base model, or a targeted module without one", () => {
    const file = saved("base");
    const wrong = expectMismatch(() => loadLora(file, { baseShapes: new Map([[Q, [64, 32] as [number, number]]]) }));
    expect(wrong.mismatched).toEqual([`${Q}: adapter is [32 x 32] but the linear is [64 x 32]`]);
    const unknown = expectMismatch(() => loadLora(file, { baseShapes: new Map() }));
    expect(unknown.mismatched).toEqual([`${Q}: no such linear in the base model`]);
    const lacking = expectMismatch(() =>
      loadLora(file, {
        baseShapes: new Map<string, [number, number]>([
          [Q, [32, 32]],
          [OUT, [32, 32]],
        ]),
      }),
    );
    expect(lacking.missing).toEqual([`${loraTensorNames(OUT).a} (module targeted by target_modules)`]);
  });

  test("a bad or missing adapter_config.json", () => {
    const file = saved("config");
    const configPath = join(dir, "config", "adapter_config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ peft_type: "IA3" }, /peft_type must be "LORA", got "IA3"/],
      [{ r: 0 }, /r must be a positive integer, got 0/],
      [{ lora_alpha: "8" }, /lora_alpha must be a number/],
      [{ target_modules: [1] }, /target_modules must be a list of names or a regex string/],
      [{ use_dora: true }, /DoRA/],
      [{ bias: "all" }, /bias "all" is not supported/],
    ];
    for (const [patch, message] of cases) {
      writeFileSync(configPath, JSON.stringify({ ...config, ...patch }));
      expect(() => loadLora(file)).toThrow(message);
      expect(() => loadLora(file)).toThrow(new RegExp(`^${configPath}: `));
    }
    rmSync(configPath);
    expect(() => loadLora(file)).toThrow(`${configPath}: config file does not exist`);
  });

  test("an untargeted module in the file", () => {
    const file = saved("untargeted");
    const configPath = join(dir, "untargeted", "adapter_config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    writeFileSync(configPath, JSON.stringify({ ...config, target_modules: ["to_k"] }));
    expect(expectMismatch(() => loadLora(file)).mismatched).toEqual([`${Q}: not matched by target_modules`]);
    using r = SafetensorsReader.open(file);
    expect(r.names.length).toBe(2);
  });
});
