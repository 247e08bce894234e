// Bridges model definitions and the engine's flat parameter buffers: list a model's parameters
// with ShapeRecorder, allocate them as FlatParameters, initialise them as PyTorch does, and
// expose them to a Graph as a ParameterSource (trainable or frozen).

import type { Engine } from "../../../gpu-core/index.ts";
import { FlatParameters } from "../../../gpu-core/parameters.ts";
import type { ParameterSource } from "./graph.ts";
import { type ParameterShape, ShapeRecorder } from "./layers.ts";

/** Parameters of a model definition, in order of first use. */
export function listParameters(define: (L: ShapeRecorder) => void): ParameterShape[] {
  const recorder = new ShapeRecorder();
  define(recorder);
  return recorder.parameters;
}

export function allocateParameters(engine: Engine, shapes: readonly ParameterShape[]): FlatParameters {
  return new FlatParameters(engine, shapes);
}

/**
 * PyTorch's default initialisation in distribution: Linear/Conv weights and biases
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (here a normal of the same variance, from Philox),
 * norms weight 1 bias 0, embeddings N(0, std), constants (CLIP's logit_scale) their value.
 */
export function initialiseParameters(
  engine: Engine,
  params: FlatParameters,
  shapes: readonly ParameterShape[],
  seed: number,
): void {
  for (const s of shapes) {
    const v = params.value(s.name);
    const entry = params.get(s.name).entry;
    if (s.init === "ones") engine.fill(v, 1);
    else if (s.init === "zeros") engine.fill(v, 0);
    else if (s.init === "constant") engine.fill(v, s.value ?? 0);
    else {
      engine.randn(v, seed, entry.offset);
      const std = s.init === "normal" ? (s.std ?? 0.02) : 1 / Math.sqrt(3 * s.fanIn);
      engine.axpby(v, std, v, 0);
    }
  }
}

/** Serves named views of `params`; gradients go to its flat gradient buffer unless frozen. */
export function parameterSource(params: FlatParameters, opts: { frozen?: boolean } = {}): ParameterSource {
  const names = new Set(params.entries.map((e) => e.name));
  return {
    lookup(name) {
      if (!names.has(name)) return undefined;
      const p = params.get(name);
      return { value: p.value, grad: opts.frozen ? null : p.grad };
    },
  };
}

/** The first source that has a name wins (e.g. LoRA adapters over a frozen base). */
export function combineSources(...sources: ParameterSource[]): ParameterSource {
  return {
    lookup(name) {
      for (const s of sources) {
        const p = s.lookup(name);
        if (p) return p;
      }
      return undefined;
    },
  };
}
