// LoRA adapters on disk, as peft saves them, so they load in peft/diffusers and back:
//   <dir>/adapter_model.safetensors   base_model.model.<X>.lora_A.weight [r, in]
//                                     base_model.model.<X>.lora_B.weight [out, r]
//   <dir>/adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}
// for each adapted linear X (e.g. down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q).
// Only file I/O and names live here; the low-rank update W + (alpha / r) B A lives with the model.
import { dirname, join } from "node:path";
import { CheckpointMismatchError, ConfigError, readJsonConfig, writeJsonConfig } from "./model-folder.ts";
import { isFloatDType, SafetensorsReader, writeSafetensors } from "./safetensors.ts";

export const PEFT_PREFIX = "base_model.model.";
export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";

export interface Matrix {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** One adapted linear: lora_A [r, in] projects down, lora_B [out, r] back up. */
export interface LoraWeights {
  readonly loraA: Matrix;
  readonly loraB: Matrix;
}

export interface LoraAdapter extends LoraWeights {
  readonly rank: number;
  readonly alpha: number;
  /** alpha / r (alpha / sqrt(r) with use_rslora), as peft scales B A. */
  readonly scaling: number;
}

export interface LoraOptions {
  rank: number;
  alpha: number;
  /** peft target_modules: a module is adapted when its name is, or ends with ".", one of these. */
  targetModules: readonly string[];
  baseModel?: string;
  metadata?: Readonly<Record<string, string>>;
  /** Name prefix of the adapter tensors (peft's default). */
  prefix?: string;
}

export function loraTensorNames(module: string, prefix = PEFT_PREFIX): { a: string; b: string } {
  return { a: `${prefix}${module}.lora_A.weight`, b: `${prefix}${module}.lora_B.weight` };
}

/** peft's rule: a list matches the full name or a dotted suffix; a string is a regex on the full name. */
export function isTargetModule(module: string, targets: readonly string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(module);
  return targets.some((t) => module === t || module.endsWith(`.${t}`));
}

function adapterConfigPath(file: string): string {
  return join(dirname(file), ADAPTER_CONFIG);
}

function entriesOf(entries: ReadonlyMap<string, LoraWeights> | Readonly<Record<string, LoraWeights>>) {
  return entries instanceof Map ? [...entries.entries()] : Object.entries(entries as Record<string, LoraWeights>);
}

/**
 * Writes the adapter weights to `file` and adapter_config.json beside it (both atomically).
 * Returns the sha256 hex of each.
 */
export function saveLora(
  file: string,
  entries: ReadonlyMap<string, LoraWeights> | Readonly<Record<string, LoraWeights>>,
  opts: LoraOptions,
): { sha256: string; configPath: string; configSha256: string } {
  const { rank, alpha, targetModules } = opts;
  const prefix = opts.prefix ?? PEFT_PREFIX;
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRA rank must be a positive integer, got ${rank}`);
  if (!Number.isFinite(alpha)) throw new Error(`LoRA alpha must be a finite number, got ${alpha}`);
  if (targetModules.length === 0) throw new Error("LoRA targetModules is empty");
  const tensors = new Map<string, Matrix>();
  for (const [module, w] of entriesOf(entries)) {
    if (module === "" || module.startsWith(prefix)) {
      throw new Error(`LoRA module '${module}': give the base module name, without '${prefix}'`);
    }
    if (!isTargetModule(module, targetModules)) {
      throw new Error(`LoRA module '${module}' is not matched by targetModules [${targetModules.join(", ")}]`);
    }
    const [r, inF] = w.loraA.shape;
    const [outF, rB] = w.loraB.shape;
    if (w.loraA.shape.length !== 2 || w.loraB.shape.length !== 2 || r !== rank || rB !== rank) {
      throw new Error(
        `LoRA module '${module}': lora_A must be [${rank}, in] and lora_B [out, ${rank}], ` +
          `got [${w.loraA.shape.join(", ")}] and [${w.loraB.shape.join(", ")}]`,
      );
    }
    if (!inF || !outF) throw new Error(`LoRA module '${module}': in and out features must be positive`);
    const names = loraTensorNames(module, prefix);
    tensors.set(names.a, w.loraA);
    tensors.set(names.b, w.loraB);
  }
  if (tensors.size === 0) throw new Error("no LoRA modules to save");
  const sha256 = writeSafetensors(file, tensors, opts.metadata ?? { format: "pt" });
  const configPath = adapterConfigPath(file);
  const configSha256 = writeJsonConfig(configPath, {
    peft_type: "LORA",
    base_model_name_or_path: opts.baseModel ?? null,
    r: rank,
    lora_alpha: alpha,
    target_modules: [...targetModules].sort(),
    lora_dropout: 0.0,
    bias: "none",
    fan_in_fan_out: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    rank_pattern: {},
    alpha_pattern: {},
    use_rslora: false,
    use_dora: false,
    task_type: null,
    revision: null,
    layers_to_transform: null,
    layers_pattern: null,
  });
  return { sha256, configPath, configSha256 };
}

/** peft's per-module override: the first pattern key that matches the name or a dotted suffix of it. */
function patternValue(patterns: unknown, module: string): unknown {
  if (typeof patterns !== "object" || patterns === null) return undefined;
  for (const [key, value] of Object.entries(patterns)) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(module)) return value;
  }
  return undefined;
}

export interface LoadedLora {
  adapters: Map<string, LoraAdapter>;
  /** adapter_config.json as read. */
  config: Record<string, unknown>;
  metadata: Record<string, string>;
}

/**
 * Reads `file` and the adapter_config.json beside it. With `baseShapes` (module -> [out, in] of
 * the base linears), also checks every adapter fits its module and every targeted module has one.
 */
export function loadLora(
  file: string,
  opts: { baseShapes?: ReadonlyMap<string, readonly [number, number]>; prefix?: string } = {},
): LoadedLora {
  const prefix = opts.prefix ?? PEFT_PREFIX;
  const configPath = adapterConfigPath(file);
  const config = readJsonConfig(configPath);
  const fail = (detail: string): never => {
    throw new ConfigError(configPath, detail);
  };
  if (config.peft_type !== "LORA") fail(`peft_type must be "LORA", got ${JSON.stringify(config.peft_type)}`);
  const r = config.r;
  const alpha = config.lora_alpha;
  const targets = config.target_modules;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1) fail(`r must be a positive integer, got ${r}`);
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) fail(`lora_alpha must be a number, got ${alpha}`);
  const targetsOk =
    typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string"));
  if (!targetsOk) fail(`target_modules must be a list of names or a regex string`);
  if (config.use_dora === true) fail("use_dora (DoRA adapters) is not supported");
  if (config.bias !== undefined && config.bias !== "none") fail(`bias ${JSON.stringify(config.bias)} is not supported`);
  if (config.fan_in_fan_out === true) fail("fan_in_fan_out is not supported");
  const targetModules = targets as string[] | string;

  const reader = SafetensorsReader.open(file);
  try {
    const pattern = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(.+)\\.lora_([AB])\\.weight$`);
    const halves = new Map<string, { a?: string; b?: string }>();
    const unexpected: string[] = [];
    const problems: string[] = [];
    for (const info of reader.tensors.values()) {
      const m = pattern.exec(info.name);
      if (!m) {
        unexpected.push(info.name);
        continue;
      }
      const module = m[1]!;
      const h = halves.get(module) ?? {};
      if (m[2] === "A") h.a = info.name;
      else h.b = info.name;
      halves.set(module, h);
      if (!isFloatDType(info.dtype)) problems.push(`${info.name}: dtype ${info.dtype} is not a float type`);
      if (info.shape.length !== 2) problems.push(`${info.name}: shape [${info.shape.join(", ")}] is not 2-D`);
    }
    const missing: string[] = [];
    const adapters = new Map<string, LoraAdapter>();
    for (const [module, h] of [...halves].sort(([x], [y]) => (x < y ? -1 : 1))) {
      const names = loraTensorNames(module, prefix);
      if (!h.a) missing.push(names.a);
      if (!h.b) missing.push(names.b);
      if (!h.a || !h.b) continue;
      if (!isTargetModule(module, targetModules)) problems.push(`${module}: not matched by target_modules`);
      const a = reader.info(h.a);
      const b = reader.info(h.b);
      const rank = patternValue(config.rank_pattern, module) ?? r;
      const moduleAlpha = patternValue(config.alpha_pattern, module) ?? alpha;
      if (a.shape[0] !== rank || b.shape[1] !== rank) {
        problems.push(
          `${module}: rank ${rank} needs lora_A [${rank}, in] and lora_B [out, ${rank}], got [${a.shape}] and [${b.shape}]`,
        );
        continue;
      }
      const base = opts.baseShapes?.get(module);
      if (opts.baseShapes && !base) {
        problems.push(`${module}: no such linear in the base model`);
      } else if (base && (b.shape[0] !== base[0] || a.shape[1] !== base[1])) {
        problems.push(
          `${module}: adapter is [${b.shape[0]} x ${a.shape[1]}] but the linear is [${base[0]} x ${base[1]}]`,
        );
      }
      if (typeof rank !== "number" || typeof moduleAlpha !== "number") continue;
      const scaling = config.use_rslora === true ? moduleAlpha / Math.sqrt(rank) : moduleAlpha / rank;
      adapters.set(module, {
        loraA: { shape: a.shape, data: reader.float32(h.a) },
        loraB: { shape: b.shape, data: reader.float32(h.b) },
        rank,
        alpha: moduleAlpha,
        scaling,
      });
    }
    if (opts.baseShapes) {
      for (const module of opts.baseShapes.keys()) {
        if (isTargetModule(module, targetModules) && !halves.has(module)) {
          missing.push(`${loraTensorNames(module, prefix).a} (module targeted by target_modules)`);
        }
      }
    }
    if (missing.length + unexpected.length + problems.length > 0) {
      throw new CheckpointMismatchError(reader.file, missing, unexpected, problems);
    }
    if (adapters.size === 0) throw new CheckpointMismatchError(reader.file, ["any LoRA tensor"], [], []);
    return { adapters, config, metadata: { ...reader.metadata } };
  } finally {
    reader.close();
  }
}
