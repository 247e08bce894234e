// The CUDA backend against the CPU backend (the reference): every row of the op table (op-table.ts)
// runs forward and backward on both engines from the same fresh random inputs, outputs poisoned
// with NaN first, and each output and gradient must agree by normalised error under the op's
// tolerance (NaN never passes); then a whole tiny UNet forward+backward, the Philox noise, one
// DDPO policy-gradient step, and a sampled trajectory from the same seed agree across backends.
// Skipped (reported as skipped) where no CUDA library is built or no GPU opens a context.
// GPU_CORE_TEST_SEED=<seed> reproduces a run.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { backendAvailable, Engine, GpuCoreError, type Tensor } from "../../gpu-core/index.ts";
import { loadIntoParameters, readJsonConfig } from "../../services/lib/checkpoints/model-folder.ts";
import { readSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import { policyGradientStep } from "../../services/lib/ddpo/policy-gradient.ts";
import { sampleImages } from "../../services/lib/diffusion/sampler.ts";
import { Graph } from "../../services/lib/models/graph.ts";
import type { Layers, Shaped } from "../../services/lib/models/layers.ts";
import {
  allocateParameters,
  combineSources,
  listParameters,
  parameterSource,
} from "../../services/lib/models/parameters.ts";
import { unetForward, validateUNetConfig } from "../../services/lib/models/unet.ts";
import { tinyModel } from "../models/tiny-model.ts";
import {
  baseSeed,
  caseSeed,
  firstNonFinite,
  type Input,
  numel,
  type OpCase,
  Rng,
  relError,
  type Tensors,
  type Values,
} from "./harness.ts";
import { TABLE } from "./op-table.ts";

/** A CUDA engine when the library is built and a context opens (a GPU is there), else null. */
function openCuda(): Engine | null {
  if (!backendAvailable("cuda")) return null;
  try {
    return Engine.open({ backend: "cuda" });
  } catch {
    return null;
  }
}

const gpu = openCuda();
const cpu = gpu ? Engine.open({ backend: "cpu" }) : null;
const hasCuda = gpu !== null;
afterAll(() => {
  gpu?.close();
  cpu?.close();
});

// Normalised error CUDA vs CPU per op. Elementwise ops evaluate the same double formulas, so they
// agree to fp32 rounding; GEMM-based ops (cuBLAS/cuDNN vs OpenBLAS) sum in other orders, and their
// gradients go through more sums still.
const FWD_TOL: Record<string, number> = { conv2d: 1e-5, linear: 1e-5, attention: 1e-5 };
const BWD_TOL: Record<string, number> = { conv2d: 1e-4, linear: 1e-4, attention: 1e-4, group_norm: 1e-5 };
const DEFAULT_TOL = 2e-6;

interface Mismatch {
  what: string;
  err: number;
}

/** Runs one case on both engines from the same inputs, probes and pre-fills; returns mismatches. */
function compareBackends(c: OpCase<string, string>, rng: Rng, fwdTol: number, bwdTol: number): Mismatch[] {
  const bad: Mismatch[] = [];
  const owned: Tensor[] = [];
  const track = <T extends Tensor>(t: T): T => {
    owned.push(t);
    return t;
  };
  const inputNames = Object.keys(c.inputs);
  const outputNames = Object.keys(c.outputs);
  const input = (name: string): Input | null => c.inputs[name] ?? null;
  const upload = (e: Engine, data: Float64Array, shape: number[], i32 = false): Tensor =>
    track(i32 ? e.fromInt32(Int32Array.from(data), shape) : e.fromArray(Float32Array.from(data), shape));
  const compare = (what: string, got: Float32Array, want: Float32Array, tol: number, perElement = false) => {
    const nonFinite = firstNonFinite(got);
    if (nonFinite >= 0) {
      bad.push({ what: `${what}[${nonFinite}] = ${got[nonFinite]} (not finite)`, err: Number.NaN });
      return;
    }
    const err = perElement
      ? Math.max(...Array.from(want, (w, i) => relError([got[i] as number], [w])))
      : relError(got, want);
    if (!(err < tol)) bad.push({ what, err });
  };
  try {
    const engines: [Engine, Engine] = [cpu as Engine, gpu as Engine];
    const inputsOn = (e: Engine): Tensors<string> => {
      const t: Tensors<string> = {};
      for (const name of inputNames) {
        const inp = input(name);
        t[name] = inp ? upload(e, inp.data, inp.shape, inp.dtype === "i32") : null;
      }
      return t;
    };
    const poisonedOutputsOn = (e: Engine): Tensors<string> => {
      const t: Tensors<string> = {};
      for (const name of outputNames) {
        const y = track(e.tensor(c.outputs[name] ?? []));
        e.fill(y, Number.NaN);
        t[name] = y;
      }
      return t;
    };
    const xs: [Tensors<string>, Tensors<string>] = [inputsOn(engines[0]), inputsOn(engines[1])];
    const ys: [Tensors<string>, Tensors<string>] = [poisonedOutputsOn(engines[0]), poisonedOutputsOn(engines[1])];
    c.forward(engines[0], xs[0], ys[0]);
    c.forward(engines[1], xs[1], ys[1]);
    for (const name of outputNames) {
      const want = (ys[0][name] as Tensor).read() as Float32Array;
      const got = (ys[1][name] as Tensor).read() as Float32Array;
      compare(`forward ${name}`, got, want, fwdTol, c.perElement?.includes(name) ?? false);
    }
    const backward = c.backward;
    if (!backward) return bad;

    const probeHost: Values<string> = {};
    for (const name of outputNames) {
      probeHost[name] = c.loss.includes(name)
        ? rng.array(numel(c.outputs[name] ?? []), () => rng.range(0.5, 1.5) * (rng.uniform() < 0.5 ? -1 : 1))
        : null;
    }
    const prefill = new Map<string, Float64Array>();
    for (const name of inputNames) {
      const inp = input(name);
      if (!inp || inp.role === "const") continue;
      prefill.set(
        name,
        inp.role === "param" ? rng.array(inp.data.length) : new Float64Array(inp.data.length).fill(NaN),
      );
    }
    const backwardOn = (k: 0 | 1): Tensors<string> => {
      const e = engines[k];
      const probe: Tensors<string> = {};
      for (const name of outputNames) {
        const p = probeHost[name];
        probe[name] = p ? upload(e, p, c.outputs[name] ?? []) : null;
      }
      const g: Tensors<string> = {};
      for (const name of inputNames) {
        const pre = prefill.get(name);
        g[name] = pre ? upload(e, pre, (input(name) as Input).shape) : null;
      }
      backward.call(c, e, xs[k], ys[k], probe, probeHost, g);
      return g;
    };
    const grads = [backwardOn(0), backwardOn(1)] as const;
    for (const [name, pre] of prefill) {
      const isParam = input(name)?.role === "param";
      // parameter gradients accumulate: compare what the backward added, not the pre-fill
      const added = (t: Tensor) => {
        const v = t.read() as Float32Array;
        return isParam ? v.map((x, i) => x - (pre[i] as number)) : v;
      };
      const want = added(grads[0][name] as Tensor);
      const got = added(grads[1][name] as Tensor);
      compare(`backward d${name}${isParam ? "(+=)" : "(=)"}`, got, want, bwdTol);
    }
    return bad;
  } finally {
    for (const t of owned) t.close();
  }
}

const seed = baseSeed();

describe(`gpu-core CUDA vs CPU ops (seed ${seed})`, () => {
  for (const row of TABLE) {
    const name = `${row.op}: ${row.label}`;
    test.skipIf(!hasCuda)(name, () => {
      const rng = new Rng(caseSeed(seed, name));
      const op = row.op.split(" ")[0] ?? row.op;
      const c = row.build(rng);
      let bad: Mismatch[];
      try {
        bad = compareBackends(c, rng, FWD_TOL[op] ?? DEFAULT_TOL, BWD_TOL[op] ?? FWD_TOL[op] ?? DEFAULT_TOL);
      } catch (err) {
        // UNSUPPORTED on CUDA is a failure, never a skip
        const code = err instanceof GpuCoreError ? err.code : "exception";
        throw new Error(`${name} [seed ${seed}] threw ${code}: ${err instanceof Error ? err.message : err}`);
      }
      const lines = bad.map((b) => `${b.what}: CUDA vs CPU relative error ${b.err.toExponential(2)}`);
      expect(lines).toEqual([]);
    });
  }
});

/** max over i of |a - b| / max(1, |b|), and how many elements differ at all. */
function maxDiff(a: Float32Array, b: Float32Array): { max: number; unequal: number } {
  let max = 0;
  let unequal = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number)) / Math.max(1, Math.abs(b[i] as number));
    if (!(d <= max)) max = d; // NaN sticks
    if (a[i] !== b[i]) unequal++;
  }
  return { max, unequal };
}

describe("gpu-core CUDA vs CPU: models and DDPO", () => {
  test.skipIf(!hasCuda)("Philox normals: the same seed gives the same noise", () => {
    const n = 1 << 20;
    const [a, b] = [cpu as Engine, gpu as Engine].map((e) => {
      const t = e.tensor([n]);
      e.randn(t, 0x1234_5678_9abc, 77);
      const v = t.read();
      t.close();
      return v;
    });
    // fp32 results of double math; libm and CUDA's double sin/cos/log may differ in the last
    // double bit, which changes the fp32 rounding only at a tie
    const d = maxDiff(b as Float32Array, a as Float32Array);
    console.log(`randn CUDA vs CPU: ${d.unequal} of ${n} differ, max relative diff ${d.max.toExponential(2)}`);
    expect(d.max).toBeLessThan(1e-6);
    expect(d.unequal).toBeLessThan(n * 1e-4);
  });

  test.skipIf(!hasCuda)("tiny diffusers UNet: forward and every gradient agree", () => {
    const dir = join(import.meta.dir, "..", "fixtures", "unet_tiny");
    const cfg = validateUNetConfig(readJsonConfig(join(dir, "config.json")));
    const io = readSafetensors(join(dir, "io.safetensors")).tensors;
    const get = (k: string) => io.get(k) as { shape: readonly number[]; data: Float32Array };
    const results = [cpu as Engine, gpu as Engine].map((e) => {
      const x = e.fromArray(get("sample").data, get("sample").shape);
      const t = e.fromArray(get("timestep").data, get("timestep").shape);
      const ctx = e.fromArray(get("encoder_hidden_states").data, get("encoder_hidden_states").shape);
      const shapes = listParameters((L) => {
        unetForward(L, cfg, L.input(x.shape), L.input(t.shape), L.input(ctx.shape));
      });
      const params = allocateParameters(e, shapes);
      loadIntoParameters(params, join(dir, "diffusion_pytorch_model.safetensors"));
      const arena = e.arena(1 << 24);
      const g = new Graph(e, parameterSource(params), arena);
      g.requireGrad(x);
      const out = unetForward(g as unknown as Layers<Shaped>, cfg, x, t, ctx) as Tensor;
      params.zeroGrad();
      g.backward(out, e.fromArray(get("probe").data, get("probe").shape, { arena }));
      const dx = g.gradOf(x);
      if (!dx) throw new Error("the graph gave the sample no gradient");
      const r = { out: out.read(), dx: dx.read(), grads: params.grads.read() };
      g.dispose();
      arena.close();
      params.close();
      for (const v of [x, t, ctx]) v.close();
      return r;
    });
    const [c, d] = results as [(typeof results)[0], (typeof results)[0]];
    const errs = { out: relError(d.out, c.out), dx: relError(d.dx, c.dx), grads: relError(d.grads, c.grads) };
    console.log(`tiny UNet CUDA vs CPU: ${JSON.stringify(errs)}`);
    for (const v of [d.out, d.dx, d.grads]) expect(firstNonFinite(v)).toBe(-1);
    expect(errs.out).toBeLessThan(1e-5);
    expect(errs.dx).toBeLessThan(1e-4);
    expect(errs.grads).toBeLessThan(1e-4);
  });

  test.skipIf(!hasCuda)("DDPO: the same seed gives the same trajectory, and one policy step agrees", () => {
    const captions = ["cat face", "red apple", "tiger", "frog"];
    const o = { steps: 4, guidance: 3, eta: 1, seeds: [11, 12], keepTrajectory: true };
    const runs = [cpu as Engine, gpu as Engine].map((e) => {
      const model = tinyModel(e, captions, 5);
      const weights = model.unet.values.read();
      const traj = sampleImages(model, ["cat face", "tiger"], o);
      // One IS policy-gradient step on the CPU's trajectory (the same data on both backends).
      return { model, weights, traj };
    });
    const [a, b] = runs as [(typeof runs)[0], (typeof runs)[0]];
    // the same Philox initialisation on both (equal up to a rare last-bit tie, see the randn test)
    expect(maxDiff(b.weights, a.weights).max).toBeLessThan(1e-6);
    const latentErr = Math.max(...a.traj.latents.map((l, i) => relError(b.traj.latents[i] as Float32Array, l)));
    const lpErr = Math.max(...a.traj.logProbs.map((l, i) => relError(b.traj.logProbs[i] as Float32Array, l)));
    console.log(`trajectory CUDA vs CPU: latents ${latentErr.toExponential(2)}, log-probs ${lpErr.toExponential(2)}`);
    expect(latentErr).toBeLessThan(1e-4);
    expect(lpErr).toBeLessThan(1e-4);

    const per = 3 * 16 * 16;
    const k = 1;
    const grads = runs.map(({ model }) => {
      const e = model.engine;
      const source = combineSources(model.unetSource({ frozen: false }), model.textSource({ frozen: true }));
      const arena = e.arena();
      model.unet.zeroGrad();
      const stats = policyGradientStep(
        model,
        source,
        null,
        arena,
        {
          prompts: a.traj.prompts,
          xT: Float32Array.from(a.traj.latents.flatMap((l) => Array.from(l.subarray(k * per, (k + 1) * per)))),
          xPrev: Float32Array.from(a.traj.latents.flatMap((l) => Array.from(l.subarray((k + 1) * per, (k + 2) * per)))),
          timesteps: a.traj.prompts.map(() => a.traj.timesteps[k] as number),
          oldLogProbs: Float32Array.from(a.traj.logProbs.map((l, i) => (l[k] as number) - 0.01 * i)),
          advantages: Float32Array.of(1.2, -0.7),
        },
        { loss: "ddpo_is", guidance: 3, eta: 1, steps: 4, clipRange: 0.2, advClipMax: 5, klCoefficient: 0 },
        1,
      );
      arena.close();
      return { stats, grads: model.unet.grads.read() };
    });
    const [g0, g1] = grads as [(typeof grads)[0], (typeof grads)[0]];
    const gradErr = relError(g1.grads, g0.grads);
    console.log(
      `policy step CUDA vs CPU: loss ${g0.stats.loss} vs ${g1.stats.loss}, grads ${gradErr.toExponential(2)}`,
    );
    expect(firstNonFinite(g1.grads)).toBe(-1);
    expect(Math.abs(g1.stats.loss - g0.stats.loss)).toBeLessThan(1e-4 * Math.max(1, Math.abs(g0.stats.loss)));
    expect(gradErr).toBeLessThan(1e-3);
    for (const r of runs) r.model.close();
  });
});
