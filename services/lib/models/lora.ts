// LoRA adapters (Hu et al. 2021) on the UNet's attention projections: y = W x + (alpha / r) B A x
// with A [r, in], B [out, r], the base W frozen. B starts at zero, so a fresh adapter set
// reproduces the base model exactly. Saved in peft's layout (checkpoints/lora.ts).

import { join } from "node:path";
import type { Engine, Tensor } from "../../../gpu-core/index.ts";
import { FlatParameters } from "../../../gpu-core/parameters.ts";
import { ADAPTER_WEIGHTS, type LoraWeights, loadLora, saveLora } from "../checkpoints/lora.ts";
import type { LoraAdapters, ParameterSlot, ParameterSource } from "./graph.ts";
import { parameterSource } from "./parameters.ts";

/** diffusers' attention projections, the modules DDPO's LoRA adapts. */
export const ATTENTION_PROJECTIONS = ["to_q", "to_k", "to_v", "to_out.0"] as const;

export interface LoraSettings {
  rank: number;
  alpha: number;
}

export class LoraAdapterSet implements LoraAdapters {
  readonly params: FlatParameters;
  readonly scale: number;
  /** module name -> [out, in] of its base linear */
  readonly modules: Map<string, readonly [number, number]>;

  private constructor(
    readonly engine: Engine,
    modules: Map<string, readonly [number, number]>,
    readonly settings: LoraSettings,
  ) {
    if (!Number.isInteger(settings.rank) || settings.rank < 1)
      throw new Error(`LoRA rank must be >= 1, got ${settings.rank}`);
    if (!(settings.alpha > 0)) throw new Error(`LoRA alpha must be > 0, got ${settings.alpha}`);
    if (modules.size === 0) throw new Error("LoRA: the model has no attention projections to adapt");
    // Sorted, so a set has one flat layout however it was made (fresh or loaded).
    this.modules = new Map([...modules].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    this.scale = settings.alpha / settings.rank;
    this.params = new FlatParameters(
      engine,
      [...this.modules].flatMap(([m, [out, inF]]) => [
        { name: `${m}.lora_A.weight`, shape: [settings.rank, inF] },
        { name: `${m}.lora_B.weight`, shape: [out, settings.rank] },
      ]),
    );
  }

  /** The attention projections among a model's parameters ("<module>.weight" [out, in]). */
  static targetsOf(
    parameters: readonly { name: string; shape: readonly number[] }[],
  ): Map<string, readonly [number, number]> {
    const out = new Map<string, readonly [number, number]>();
    for (const p of parameters) {
      if (!p.name.endsWith(".weight") || p.shape.length !== 2) continue;
      const module = p.name.slice(0, -".weight".length);
      if (ATTENTION_PROJECTIONS.some((t) => module.endsWith(`.${t}`))) out.set(module, [p.shape[0]!, p.shape[1]!]);
    }
    return out;
  }

  /** Fresh adapters: A ~ the linear's default initialisation (Philox `seed`), B = 0. */
  static create(
    engine: Engine,
    parameters: readonly { name: string; shape: readonly number[] }[],
    settings: LoraSettings,
    seed: number,
  ): LoraAdapterSet {
    const set = new LoraAdapterSet(engine, LoraAdapterSet.targetsOf(parameters), settings);
    for (const [m, [, inF]] of set.modules) {
      const a = set.params.value(`${m}.lora_A.weight`);
      engine.randn(a, seed, set.params.get(`${m}.lora_A.weight`).entry.offset);
      engine.axpby(a, 1 / Math.sqrt(3 * inF), a, 0);
    }
    return set;
  }

  /** Loads a peft adapter folder (adapter_model.safetensors + adapter_config.json). */
  static load(
    engine: Engine,
    parameters: readonly { name: string; shape: readonly number[] }[],
    dir: string,
  ): LoraAdapterSet {
    const baseShapes = LoraAdapterSet.targetsOf(parameters);
    const loaded = loadLora(join(dir, ADAPTER_WEIGHTS), { baseShapes });
    const first = loaded.adapters.values().next().value;
    if (!first) throw new Error(`${dir}: the adapter file holds no adapters`);
    const modules = new Map([...loaded.adapters.keys()].map((m) => [m, baseShapes.get(m)!] as const));
    const set = new LoraAdapterSet(engine, modules, { rank: first.rank, alpha: first.alpha });
    for (const [m, a] of loaded.adapters) {
      if (a.rank !== first.rank || a.alpha !== first.alpha) {
        set.close();
        throw new Error(`${dir}: per-module ranks or alphas (${m}) are not supported`);
      }
      set.params.value(`${m}.lora_A.weight`).write(a.loraA.data);
      set.params.value(`${m}.lora_B.weight`).write(a.loraB.data);
    }
    return set;
  }

  has(name: string): boolean {
    return this.modules.has(name);
  }

  source(opts: { frozen?: boolean } = {}): ParameterSource {
    return parameterSource(this.params, opts);
  }

  /** Writes peft's adapter folder; returns the weights' sha256. */
  save(dir: string, metadata: Record<string, string> = {}, baseModel?: string): string {
    const entries = new Map<string, LoraWeights>();
    for (const [m, [out, inF]] of this.modules) {
      const r = this.settings.rank;
      entries.set(m, {
        loraA: { shape: [r, inF], data: this.params.value(`${m}.lora_A.weight`).read() },
        loraB: { shape: [out, r], data: this.params.value(`${m}.lora_B.weight`).read() },
      });
    }
    return saveLora(join(dir, ADAPTER_WEIGHTS), entries, {
      rank: this.settings.rank,
      alpha: this.settings.alpha,
      targetModules: [...ATTENTION_PROJECTIONS],
      baseModel,
      metadata,
    }).sha256;
  }

  close(): void {
    this.params.close();
  }
}

/**
 * `source` with each adapted weight replaced by W + scale B A, for passes that take no gradient
 * (sampling: the policy is fixed for a whole batch). One product per module up front instead of
 * two more linears, a scale and an add in every UNet pass: the [N, out] LoRA branch is the size of
 * the layer's output, so it cost as much memory traffic as the layer itself. The merged output
 * differs from the unmerged one by float rounding only (~1e-7 relative). close() frees the copies.
 */
export function mergedLoraSource(
  engine: Engine,
  source: ParameterSource,
  lora: LoraAdapters,
): { source: ParameterSource; close(): void } {
  const merged = new Map<string, ParameterSlot>();
  const close = () => {
    for (const slot of merged.values()) slot.value.close();
  };
  const need = (name: string): Tensor => {
    const p = source.lookup(name);
    if (!p) throw new Error(`LoRA merge: parameter '${name}' is missing`);
    return p.value;
  };
  try {
    for (const [m, [out, inF]] of lora.modules) {
      const [w, a, b] = [need(`${m}.weight`), need(`${m}.lora_A.weight`), need(`${m}.lora_B.weight`)];
      const rank = a.shape[0] ?? 0;
      const at = engine.tensor([inF, rank]);
      const wm = engine.tensor([out, inF]);
      try {
        engine.transposeForward(at, a); // A^T [in, r]
        engine.linearForward(wm, b, at, null); // B A [out, in] = B (A^T)^T
        engine.axpby(wm, 1, w, lora.scale); // W + scale B A
      } catch (e) {
        wm.close();
        throw e;
      } finally {
        at.close();
      }
      merged.set(`${m}.weight`, { value: wm, grad: null });
    }
  } catch (e) {
    close();
    throw e;
  }
  return { source: { lookup: (name) => merged.get(name) ?? source.lookup(name) }, close };
}
