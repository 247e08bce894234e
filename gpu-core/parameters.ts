// Parameters, their gradients and the AdamW moments, each in one flat engine buffer carved into
// named views by an offset table (llm.c's malloc_and_point_parameters): zero-grad, the optimizer
// step, grad-norm clipping and checkpoint I/O are each one flat call.
import type { AdamWOptions, Engine, Tensor } from "./index.ts";

export interface ParameterSpec {
  name: string;
  shape: readonly number[];
}

export interface ParameterEntry extends ParameterSpec {
  offset: number; // in elements, into the flat buffers
  numel: number;
}

export interface NamedParameter {
  entry: ParameterEntry;
  value: Tensor<"f32">; // view into the flat parameter buffer
  grad: Tensor<"f32">; // view into the flat gradient buffer
}

export class FlatParameters {
  readonly entries: readonly ParameterEntry[];
  readonly total: number;
  readonly values: Tensor<"f32">;
  readonly grads: Tensor<"f32">;
  readonly #m: Tensor<"f32">;
  readonly #v: Tensor<"f32">;
  readonly #byName = new Map<string, NamedParameter>();
  #step = 0;

  constructor(
    readonly engine: Engine,
    specs: readonly ParameterSpec[],
  ) {
    let offset = 0;
    const entries: ParameterEntry[] = [];
    const seen = new Set<string>();
    for (const s of specs) {
      if (seen.has(s.name)) throw new Error(`duplicate parameter name '${s.name}'`);
      seen.add(s.name);
      const numel = s.shape.reduce((a, b) => a * b, 1);
      entries.push({ name: s.name, shape: [...s.shape], offset, numel });
      offset += numel;
    }
    if (offset === 0) throw new Error("FlatParameters needs at least one parameter");
    this.entries = entries;
    this.total = offset;
    this.values = engine.zeros([offset]);
    this.grads = engine.zeros([offset]);
    this.#m = engine.zeros([offset]);
    this.#v = engine.zeros([offset]);
    for (const e of entries) {
      // Engine tensors have 1..8 dims: a scalar parameter (shape [], CLIP's logit_scale) is viewed as [1].
      const shape = e.shape.length ? e.shape : [1];
      this.#byName.set(e.name, {
        entry: e,
        value: this.values.view(e.offset, shape),
        grad: this.grads.view(e.offset, shape),
      });
    }
  }

  /** Optimizer steps taken so far (AdamW bias correction uses it). */
  get step(): number {
    return this.#step;
  }

  get(name: string): NamedParameter {
    const p = this.#byName.get(name);
    if (!p) throw new Error(`unknown parameter '${name}'`);
    return p;
  }

  value(name: string): Tensor<"f32"> {
    return this.get(name).value;
  }

  grad(name: string): Tensor<"f32"> {
    return this.get(name).grad;
  }

  zeroGrad(): void {
    this.engine.fill(this.grads, 0);
  }

  /** Clips the global gradient norm (when maxNorm > 0) and returns the norm before clipping. */
  clipGradNorm(maxNorm: number): number {
    return this.engine.clipGradNorm(this.grads, maxNorm);
  }

  adamwStep(o: Omit<AdamWOptions, "step">): void {
    this.#step += 1;
    this.engine.adamwStep(this.values, this.grads, this.#m, this.#v, { ...o, step: this.#step });
  }

  /** Optimizer state for checkpoints: moments and step count. */
  readOptimizerState(): { m: Float32Array; v: Float32Array; step: number } {
    return { m: this.#m.read(), v: this.#v.read(), step: this.#step };
  }

  writeOptimizerState(s: { m: ArrayLike<number>; v: ArrayLike<number>; step: number }): void {
    if (s.m.length !== this.total || s.v.length !== this.total) {
      throw new Error(`optimizer state has ${s.m.length}/${s.v.length} elements, expected ${this.total}`);
    }
    this.#m.write(s.m);
    this.#v.write(s.v);
    this.#step = s.step;
  }

  close(): void {
    for (const p of this.#byName.values()) {
      p.value.close();
      p.grad.close();
    }
    this.#byName.clear();
    for (const t of [this.values, this.grads, this.#m, this.#v]) t.close();
  }
}
