// Model weights in and out of FlatParameters, and the diffusers pipeline folder around them:
//   <root>/model_index.json                                  (optional, as diffusers writes it)
//   <root>/unet/config.json + diffusion_pytorch_model.safetensors
//   <root>/text_encoder/config.json + model.safetensors
//   <root>/tokenizer/...                                     (copied as is)
//   <root>/scheduler/scheduler_config.json                   (the DDPM/DDIM noise schedule)
// Names and shapes must match the model exactly: a checkpoint that half-fits is refused with the
// full list of what is missing, unexpected or mis-shaped, never loaded partially.
import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import type { FlatParameters } from "../../../gpu-core/parameters.ts";
import { stagingPath, syncFolder, writeFileAtomic } from "./atomic-file.ts";
import { isFloatDType, SafetensorsReader, writeSafetensors } from "./safetensors.ts";

/** transformers' CLIPTextModel checkpoints carry this prefix in older exports (Stable Diffusion 1.x). */
export const CLIP_TEXT_PREFIXES: readonly string[] = ["text_model."];
/** Buffers, not parameters, that some CLIP text checkpoints also store. */
export const CLIP_TEXT_IGNORED: readonly RegExp[] = [/(^|\.)embeddings\.position_ids$/];

export class CheckpointMismatchError extends Error {
  constructor(
    readonly file: string,
    readonly missing: readonly string[],
    readonly unexpected: readonly string[],
    readonly mismatched: readonly string[],
  ) {
    const parts = [`${file} does not fit the model:`];
    const list = (title: string, xs: readonly string[]) => {
      if (xs.length === 0) return;
      const shown = xs.slice(0, 20).map((x) => `\n    ${x}`);
      const more = xs.length > 20 ? `\n    ... and ${xs.length - 20} more` : "";
      parts.push(`\n  ${title} (${xs.length}):${shown.join("")}${more}`);
    };
    list("missing from the checkpoint", missing);
    list("unexpected in the checkpoint", unexpected);
    list("shape or dtype mismatch", mismatched);
    super(parts.join(""));
    this.name = "CheckpointMismatchError";
  }
}

export interface LoadOptions {
  /** Prefixes a checkpoint name may carry, or lack, relative to the parameter names (e.g. "text_model."). */
  stripPrefix?: readonly string[];
  /** Checkpoint names (after prefix mapping) to skip: exact strings or patterns. */
  ignore?: readonly (string | RegExp)[];
}

export interface LoadReport {
  file: string;
  metadata: Record<string, string>;
  /** checkpoint name -> parameter name, for every tensor loaded. */
  mapping: Map<string, string>;
  ignored: string[];
}

/** The parameter a checkpoint name refers to: itself, with a prefix stripped, or with one added. */
function resolveName(name: string, has: (n: string) => boolean, prefixes: readonly string[]): string | undefined {
  if (has(name)) return name;
  for (const p of prefixes) {
    if (name.startsWith(p) && has(name.slice(p.length))) return name.slice(p.length);
  }
  for (const p of prefixes) if (has(p + name)) return p + name;
  return undefined;
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

/**
 * Copies every tensor of a safetensors checkpoint into the matching named views of `params`, in
 * one flat write. Refuses (changing nothing) when any parameter is missing, any tensor is
 * unexpected, or a shape or dtype differs.
 */
export function loadIntoParameters(
  params: FlatParameters,
  file: string | Uint8Array | SafetensorsReader,
  opts: LoadOptions = {},
): LoadReport {
  const reader = file instanceof SafetensorsReader ? file : SafetensorsReader.open(file);
  try {
    const byName = new Map(params.entries.map((e) => [e.name, e]));
    const prefixes = opts.stripPrefix ?? [];
    const ignore = opts.ignore ?? [];
    const ignored = (n: string) => ignore.some((p) => (typeof p === "string" ? p === n : p.test(n)));

    const mapping = new Map<string, string>();
    const claimedBy = new Map<string, string>();
    const skipped: string[] = [];
    const unexpected: string[] = [];
    const mismatched: string[] = [];
    for (const info of reader.tensors.values()) {
      const target = resolveName(info.name, (n) => byName.has(n), prefixes);
      if (target === undefined) {
        const bare = prefixes.find((p) => info.name.startsWith(p));
        if (ignored(info.name) || (bare !== undefined && ignored(info.name.slice(bare.length)))) {
          skipped.push(info.name);
        } else {
          unexpected.push(`${info.name} ${shapeText(info.shape)}`);
        }
        continue;
      }
      const other = claimedBy.get(target);
      if (other !== undefined) {
        mismatched.push(`${info.name}: parameter '${target}' is already given by '${other}'`);
        continue;
      }
      claimedBy.set(target, info.name);
      const entry = byName.get(target)!;
      if (!isFloatDType(info.dtype)) {
        mismatched.push(`${info.name}: dtype ${info.dtype} cannot fill a float32 parameter`);
      } else if (shapeText(info.shape) !== shapeText(entry.shape)) {
        mismatched.push(`${info.name}: checkpoint ${shapeText(info.shape)} vs model ${shapeText(entry.shape)}`);
      } else {
        mapping.set(info.name, target);
      }
    }
    const missing = params.entries.filter((e) => !claimedBy.has(e.name)).map((e) => `${e.name} ${shapeText(e.shape)}`);
    if (missing.length + unexpected.length + mismatched.length > 0) {
      throw new CheckpointMismatchError(reader.file, missing, unexpected, mismatched);
    }

    const flat = new Float32Array(params.total);
    for (const [name, target] of mapping) flat.set(reader.float32(name), byName.get(target)!.offset);
    params.values.write(flat);
    return { file: reader.file, metadata: { ...reader.metadata }, mapping, ignored: skipped };
  } finally {
    if (!(file instanceof SafetensorsReader)) reader.close();
  }
}

/**
 * Writes every parameter (read in one flat call) as F32 under its name, `prefix` prepended;
 * returns the sha256 hex of the file.
 */
export function saveParameters(
  params: FlatParameters,
  file: string,
  metadata: Readonly<Record<string, string>> = {},
  opts: { prefix?: string } = {},
): string {
  const flat = params.values.read();
  const tensors = new Map(
    params.entries.map((e) => [
      (opts.prefix ?? "") + e.name,
      { shape: e.shape, data: flat.subarray(e.offset, e.offset + e.numel) },
    ]),
  );
  return writeSafetensors(file, tensors, metadata);
}

// ---- JSON configs --------------------------------------------------------------------------

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = "ConfigError";
  }
}

/** A JSON object from `path`, with a clear error when the file is missing, unreadable or not an object. */
export function readJsonConfig(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new ConfigError(path, "config file does not exist");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, `cannot read: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(path, `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(path, "must hold a JSON object");
  }
  return value as Record<string, unknown>;
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (typeof v !== "object" || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
  return out;
}

/**
 * Config fields that transformers, diffusers and peft type as float. JSON from JS writes 1.0 as 1,
 * which transformers' strict config validation refuses ("expected float, got int"), so these are
 * written with a decimal point at any depth. Fields the libraries type as int stay int even when
 * their meaning is a scale (diffusers writes `mid_block_scale_factor: 1`).
 */
export const FLOAT_CONFIG_KEYS: ReadonlySet<string> = new Set([
  // transformers CLIPConfig / CLIPTextConfig / CLIPVisionConfig
  "attention_dropout",
  "initializer_factor",
  "initializer_range",
  "layer_norm_eps",
  "logit_scale_init_value",
  // diffusers UNet2DConditionModel
  "dropout",
  "norm_eps",
  "resnet_out_scale_factor",
  // diffusers DDPMScheduler / DDIMScheduler
  "beta_start",
  "beta_end",
  "clip_sample_range",
  "sample_max_value",
  "dynamic_thresholding_ratio",
  // peft LoraConfig
  "lora_dropout",
]);

/** JSON text as Python's json.dump(indent=2) lays it out, FLOAT_CONFIG_KEYS' numbers as floats. */
export function configJson(value: unknown): string {
  const render = (v: unknown, indent: string, floatTyped: boolean): string => {
    if (typeof v === "number" && floatTyped && Number.isInteger(v) && !/e/i.test(String(v))) return `${v}.0`;
    if (typeof v !== "object" || v === null) return JSON.stringify(v) ?? "null";
    const inner = `${indent}  `;
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => inner + render(x, inner, floatTyped)).join(",\n")}\n${indent}]`;
    }
    const keys = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined);
    if (keys.length === 0) return "{}";
    const fields = keys.map(
      (k) =>
        `${inner}${JSON.stringify(k)}: ${render((v as Record<string, unknown>)[k], inner, FLOAT_CONFIG_KEYS.has(k))}`,
    );
    return `{\n${fields.join(",\n")}\n${indent}}`;
  };
  return render(sortKeys(value), "", false);
}

/** As diffusers writes configs: sorted keys, 2-space indent, floats as floats, trailing newline. Returns the sha256. */
export function writeJsonConfig(path: string, value: Readonly<Record<string, unknown>>): string {
  return writeFileAtomic(path, [Buffer.from(`${configJson(value)}\n`, "utf8")]);
}

// ---- the noise schedule ---------------------------------------------------------------------

export type BetaSchedule = "linear" | "scaled_linear";

/** diffusers' DDPMScheduler / DDIMScheduler config; keys this system does not read pass through. */
export interface SchedulerConfig {
  readonly [key: string]: unknown;
  readonly _class_name: string;
  readonly num_train_timesteps: number;
  readonly beta_start: number;
  readonly beta_end: number;
  readonly beta_schedule: BetaSchedule;
  readonly prediction_type: "epsilon";
  readonly clip_sample: boolean;
  readonly clip_sample_range: number;
  readonly set_alpha_to_one: boolean;
  readonly steps_offset: number;
  readonly timestep_spacing: "leading" | "trailing" | "linspace";
}

/** DDIMScheduler's constructor defaults, which diffusers applies to keys a config leaves out. */
export const DDIM_SCHEDULER_DEFAULTS: SchedulerConfig = {
  _class_name: "DDIMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  prediction_type: "epsilon",
  clip_sample: true,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  timestep_spacing: "leading",
};

/** Validates a scheduler config (defaults filled in); refuses settings the sampler does not implement. */
export function parseSchedulerConfig(
  raw: Readonly<Record<string, unknown>>,
  file = "scheduler config",
): SchedulerConfig {
  const c: Record<string, unknown> = { ...DDIM_SCHEDULER_DEFAULTS, ...raw };
  const fail = (detail: string): never => {
    throw new ConfigError(file, detail);
  };
  const num = (k: string, ok: (v: number) => boolean, what: string) => {
    const v = c[k];
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) fail(`${k} must be ${what}, got ${JSON.stringify(v)}`);
  };
  if (typeof c._class_name !== "string") fail(`_class_name must be a string`);
  num("num_train_timesteps", (v) => Number.isInteger(v) && v >= 1, "a positive integer");
  num("beta_start", (v) => v > 0 && v < 1, "in (0, 1)");
  num("beta_end", (v) => v > 0 && v < 1, "in (0, 1)");
  if ((c.beta_end as number) < (c.beta_start as number))
    fail(`beta_end (${c.beta_end}) is below beta_start (${c.beta_start})`);
  if (c.beta_schedule !== "linear" && c.beta_schedule !== "scaled_linear") {
    fail(`beta_schedule ${JSON.stringify(c.beta_schedule)} is not supported (use "linear" or "scaled_linear")`);
  }
  if (c.prediction_type !== "epsilon") {
    fail(`prediction_type ${JSON.stringify(c.prediction_type)} is not supported (only "epsilon")`);
  }
  if (typeof c.clip_sample !== "boolean") fail(`clip_sample must be a boolean`);
  num("clip_sample_range", (v) => v > 0, "positive");
  if (typeof c.set_alpha_to_one !== "boolean") fail(`set_alpha_to_one must be a boolean`);
  num("steps_offset", (v) => Number.isInteger(v) && v >= 0, "a non-negative integer");
  if (!["leading", "trailing", "linspace"].includes(c.timestep_spacing as string)) {
    fail(`timestep_spacing ${JSON.stringify(c.timestep_spacing)} is not one of leading, trailing, linspace`);
  }
  if (c.trained_betas !== undefined && c.trained_betas !== null) fail("trained_betas is not supported");
  for (const k of ["thresholding", "rescale_betas_zero_snr"]) {
    if (c[k] !== undefined && c[k] !== false) fail(`${k} is not supported`);
  }
  return c as SchedulerConfig;
}

export function readSchedulerConfig(path: string): SchedulerConfig {
  return parseSchedulerConfig(readJsonConfig(path), path);
}

// ---- the pipeline folder ------------------------------------------------------------------

export const PIPELINE_FILES = {
  modelIndex: "model_index.json",
  unetConfig: "unet/config.json",
  unetWeights: "unet/diffusion_pytorch_model.safetensors",
  textEncoderConfig: "text_encoder/config.json",
  textEncoderWeights: "text_encoder/model.safetensors",
  tokenizer: "tokenizer",
  schedulerConfig: "scheduler/scheduler_config.json",
} as const;

export type PipelinePaths = { readonly [K in keyof typeof PIPELINE_FILES]: string };

export function pipelinePaths(root: string): PipelinePaths {
  const out: Record<string, string> = {};
  for (const [k, rel] of Object.entries(PIPELINE_FILES)) out[k] = join(root, rel);
  return out as PipelinePaths;
}

export interface PipelineComponent {
  config: Readonly<Record<string, unknown>>;
  params: FlatParameters;
  metadata?: Readonly<Record<string, string>>;
}

export interface PipelineParts {
  unet: PipelineComponent;
  textEncoder: PipelineComponent;
  scheduler: Readonly<Record<string, unknown>>;
  /** A folder whose files are copied into tokenizer/ as they are. */
  tokenizerFrom?: string;
  /** model_index.json content; by default one like diffusers' is written; false writes none. */
  modelIndex?: Readonly<Record<string, unknown>> | false;
  /** `_class_name` of the default model_index.json. */
  pipelineClass?: string;
  /** [library, class] of the tokenizer in the default model_index.json. */
  tokenizerClass?: readonly [string, string];
}

export interface PipelineManifest {
  root: string;
  /** Every file written, relative to root (forward slashes), with its sha256 hex. */
  files: Record<string, string>;
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.isFile()) out.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out.sort();
}

function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function classOf(config: Readonly<Record<string, unknown>>, fallback: string): string {
  const arch = config.architectures;
  if (typeof config._class_name === "string") return config._class_name;
  if (Array.isArray(arch) && typeof arch[0] === "string") return arch[0];
  return fallback;
}

/**
 * Writes the whole pipeline folder into a staging folder beside `root`, then swaps it in, so a
 * crash never leaves a half-written checkpoint under `root`.
 */
export function savePipeline(root: string, parts: PipelineParts): PipelineManifest {
  const scheduler = parseSchedulerConfig(parts.scheduler);
  if (parts.tokenizerFrom !== undefined && !statSync(parts.tokenizerFrom, { throwIfNoEntry: false })?.isDirectory()) {
    throw new ConfigError(parts.tokenizerFrom, "tokenizer folder does not exist");
  }
  const staging = stagingPath(root);
  const p = pipelinePaths(staging);
  const files: Record<string, string> = {};
  const rel = (path: string) => relative(staging, path).split("\\").join("/");
  try {
    files[rel(p.unetConfig)] = writeJsonConfig(p.unetConfig, parts.unet.config);
    files[rel(p.unetWeights)] = saveParameters(
      parts.unet.params,
      p.unetWeights,
      parts.unet.metadata ?? { format: "pt" },
    );
    files[rel(p.textEncoderConfig)] = writeJsonConfig(p.textEncoderConfig, parts.textEncoder.config);
    files[rel(p.textEncoderWeights)] = saveParameters(
      parts.textEncoder.params,
      p.textEncoderWeights,
      parts.textEncoder.metadata ?? { format: "pt" },
    );
    files[rel(p.schedulerConfig)] = writeJsonConfig(p.schedulerConfig, scheduler);
    if (parts.tokenizerFrom !== undefined) {
      cpSync(parts.tokenizerFrom, p.tokenizer, { recursive: true });
      for (const f of filesUnder(p.tokenizer)) files[rel(f)] = sha256File(f);
    }
    if (parts.modelIndex !== false) {
      const index = parts.modelIndex ?? {
        _class_name: parts.pipelineClass ?? "DDPOPipeline",
        scheduler: ["diffusers", scheduler._class_name],
        text_encoder: ["transformers", classOf(parts.textEncoder.config, "CLIPTextModel")],
        unet: ["diffusers", classOf(parts.unet.config, "UNet2DConditionModel")],
        ...(parts.tokenizerFrom !== undefined
          ? { tokenizer: parts.tokenizerClass ?? ["transformers", "CLIPTokenizer"] }
          : {}),
      };
      files[rel(p.modelIndex)] = writeJsonConfig(p.modelIndex, index);
    }
    // Swap: the old folder steps aside, the new one takes its name, then the old one goes.
    const old = existsSync(root) ? stagingPath(root, "old") : undefined;
    if (old) renameSync(root, old);
    try {
      renameSync(staging, root);
    } catch (err) {
      if (old) renameSync(old, root);
      throw err;
    }
    syncFolder(dirname(root));
    if (old) rmSync(old, { recursive: true, force: true });
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  return { root, files };
}

export interface PipelineFolder {
  paths: PipelinePaths;
  unetConfig: Record<string, unknown>;
  textEncoderConfig: Record<string, unknown>;
  scheduler: SchedulerConfig;
  /** Files under tokenizer/, relative to it; empty when there is none. */
  tokenizerFiles: string[];
  modelIndex: Record<string, unknown> | null;
}

/** Reads and checks the folder's configs and that its weight files exist (weights load separately). */
export function readPipeline(root: string): PipelineFolder {
  if (!statSync(root, { throwIfNoEntry: false })?.isDirectory()) {
    throw new ConfigError(root, "pipeline folder does not exist");
  }
  const paths = pipelinePaths(root);
  for (const k of [
    "unetConfig",
    "unetWeights",
    "textEncoderConfig",
    "textEncoderWeights",
    "schedulerConfig",
  ] as const) {
    if (!existsSync(paths[k])) throw new ConfigError(root, `pipeline folder lacks ${PIPELINE_FILES[k]}`);
  }
  return {
    paths,
    unetConfig: readJsonConfig(paths.unetConfig),
    textEncoderConfig: readJsonConfig(paths.textEncoderConfig),
    scheduler: readSchedulerConfig(paths.schedulerConfig),
    tokenizerFiles: filesUnder(paths.tokenizer).map((f) => relative(paths.tokenizer, f).split("\\").join("/")),
    modelIndex: existsSync(paths.modelIndex) ? readJsonConfig(paths.modelIndex) : null,
  };
}
