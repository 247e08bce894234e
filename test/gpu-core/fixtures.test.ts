// gpu-core's DDIM step and DDPO losses against values computed with PyTorch + diffusers
// (test/fixtures/*.json, float64): the engine (fp32) must reproduce the forward values to 1e-4
// relative and the gradients to 1e-3; the float64 reference (reference.ts) is held to 1e-9, which
// checks the reference itself against an outside implementation. Max errors are printed at the end.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine, type Tensor } from "../../gpu-core/index.ts";
import { firstNonFinite, numel, relError } from "./harness.ts";
import * as ref from "./reference.ts";

interface DdimCase {
  schedule: string;
  num_inference_steps: number;
  eta: number;
  t: number;
  t_prev: number;
  alpha_bar_t: number;
  alpha_bar_prev: number;
  sigma: number;
  shape: number[];
  x_t: number[];
  eps: number[];
  noise: number[];
  x_prev: number[];
  mean: number[];
  log_prob: number[];
  upstream_grad_log_prob: number[];
  grad_eps: number[];
}

interface DdpoCase {
  clip_range: number;
  adv_clip_max: number;
  log_prob: number[];
  old_log_prob: number[];
  advantages: number[];
  is_loss: number;
  is_grad_log_prob: number[];
  approx_kl: number;
  clip_fraction: number;
  sf_loss: number;
  sf_grad_log_prob: number[];
}

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const FWD_TOL = 1e-4;
const GRAD_TOL = 1e-3;
const REF_TOL = 1e-9; // the float64 reference on the float64 fixture inputs

async function loadCases<T>(file: string): Promise<T[]> {
  const json = (await Bun.file(join(FIXTURES, file)).json()) as { about: string; cases: T[] };
  if (!Array.isArray(json.cases) || json.cases.length === 0) throw new Error(`${file} has no cases`);
  return json.cases;
}

const ddimCases = await loadCases<DdimCase>("ddim_logprob.json");
const ddpoCases = await loadCases<DdpoCase>("ddpo_loss.json");

/** Max observed error per quantity, printed at the end. */
const maxErr = new Map<string, number>();
function record(what: string, err: number): number {
  maxErr.set(what, Math.max(maxErr.get(what) ?? 0, err));
  return err;
}

let engine: Engine | null = null;
const owned: Tensor[] = [];

function e(): Engine {
  if (!engine) throw new Error("engine did not open");
  return engine;
}

function input(values: readonly number[], shape: readonly number[]): Tensor {
  const t = e().fromArray(Float32Array.from(values), shape);
  owned.push(t);
  return t;
}

/** A new output tensor poisoned with NaN, so an element the op does not write is caught. */
function output(shape: readonly number[]): Tensor {
  const t = e().tensor(shape);
  e().fill(t, Number.NaN);
  owned.push(t);
  return t;
}

/** Reads t, asserts every element is finite, returns the normalised error against `want`. */
function errorOf(t: Tensor, want: ArrayLike<number>, what: string): number {
  const got = t.read();
  const bad = firstNonFinite(got);
  if (bad >= 0) throw new Error(`${what}: element ${bad} is ${got[bad]} (not finite)`);
  return record(what, relError(got, want));
}

function scalarError(got: number, want: number, what: string): number {
  if (!Number.isFinite(got)) throw new Error(`${what}: ${got} is not finite`);
  return record(what, relError([got], [want]));
}

describe("gpu-core vs PyTorch fixtures", () => {
  beforeAll(() => {
    engine = Engine.open({ backend: "cpu" });
  });
  afterAll(() => {
    const lines = [...maxErr].map(([what, err]) => `  ${what.padEnd(44)} ${err.toExponential(2)}`);
    console.log(`\ngpu-core vs PyTorch fixtures, max relative error:\n${lines.join("\n")}\n`);
    for (const t of owned) t.close();
    engine?.close();
  });

  ddimCases.forEach((c, i) => {
    const B = c.shape[0] ?? 1;
    const M = numel(c.shape) / B;
    const at = new Float64Array(B).fill(c.alpha_bar_t);
    const ap = new Float64Array(B).fill(c.alpha_bar_prev);
    const name = `DDIM #${i} ${c.schedule} ${c.num_inference_steps} steps t ${c.t} -> ${c.t_prev} eta ${c.eta}`;

    test(`${name}: float64 reference reproduces the fixture`, () => {
      const xT = Float64Array.from(c.x_t);
      const eps = Float64Array.from(c.eps);
      const sampled = ref.ddimStep({ noise: Float64Array.from(c.noise) }, xT, eps, at, ap, c.eta, 0, B, M);
      expect(record("reference sigma", relError(sampled.sigma, [c.sigma, c.sigma]))).toBeLessThan(REF_TOL);
      expect(record("reference x_prev", relError(sampled.xPrev, c.x_prev))).toBeLessThan(REF_TOL);
      expect(record("reference mean", relError(sampled.mean, c.mean))).toBeLessThan(REF_TOL);
      expect(record("reference log_prob (sampled)", relError(sampled.logProb, c.log_prob))).toBeLessThan(REF_TOL);
      const given = ref.ddimStep({ xPrev: Float64Array.from(c.x_prev) }, xT, eps, at, ap, c.eta, 0, B, M);
      expect(record("reference log_prob (given)", relError(given.logProb, c.log_prob))).toBeLessThan(REF_TOL);
    });

    test(`${name}: sampling form (x_prev, mean, log_prob)`, () => {
      const xPrev = output(c.shape);
      const logProb = output([B]);
      const mean = output(c.shape);
      const xT = input(c.x_t, c.shape);
      const eps = input(c.eps, c.shape);
      const noise = input(c.noise, c.shape);
      e().ddimStepSample(xPrev, logProb, mean, xT, eps, noise, at, ap, c.eta);
      expect(errorOf(xPrev, c.x_prev, "engine DDIM x_prev (sampled)")).toBeLessThan(FWD_TOL);
      expect(errorOf(mean, c.mean, "engine DDIM mean (sampled)")).toBeLessThan(FWD_TOL);
      expect(errorOf(logProb, c.log_prob, "engine DDIM log_prob (sampled)")).toBeLessThan(FWD_TOL);
    });

    test(`${name}: log-prob of the given x_prev and its gradient`, () => {
      const logProb = output([B]);
      const mean = output(c.shape);
      const xPrev = input(c.x_prev, c.shape);
      const xT = input(c.x_t, c.shape);
      const eps = input(c.eps, c.shape);
      e().ddimStepLogProb(logProb, mean, xPrev, xT, eps, at, ap, c.eta);
      expect(errorOf(mean, c.mean, "engine DDIM mean (given)")).toBeLessThan(FWD_TOL);
      expect(errorOf(logProb, c.log_prob, "engine DDIM log_prob (given)")).toBeLessThan(FWD_TOL);
      const deps = output(c.shape);
      const upstream = input(c.upstream_grad_log_prob, [B]);
      e().ddimStepLogProbBackward(deps, upstream, xPrev, xT, eps, at, ap, c.eta);
      expect(errorOf(deps, c.grad_eps, "engine DDIM grad_eps")).toBeLessThan(GRAD_TOL);
    });
  });

  ddpoCases.forEach((c, i) => {
    const N = c.log_prob.length;
    const name = `DDPO #${i} clip_range ${c.clip_range} adv_clip_max ${c.adv_clip_max}`;

    test(`${name}: float64 reference reproduces the fixture`, () => {
      const lp = Float64Array.from(c.log_prob);
      const is = ref.ddpoIs(
        lp,
        Float64Array.from(c.old_log_prob),
        Float64Array.from(c.advantages),
        c.clip_range,
        c.adv_clip_max,
      );
      expect(record("reference DDPO_IS loss", relError([is.loss], [c.is_loss]))).toBeLessThan(REF_TOL);
      expect(record("reference approx_kl", relError([is.approxKl], [c.approx_kl]))).toBeLessThan(REF_TOL);
      expect(is.clipFraction).toBe(c.clip_fraction);
      const sf = ref.ddpoSf(lp, Float64Array.from(c.advantages), c.adv_clip_max);
      expect(record("reference DDPO_SF loss", relError([sf], [c.sf_loss]))).toBeLessThan(REF_TOL);
    });

    test(`${name}: DDPO_IS loss, approx_kl, clip fraction and gradient`, () => {
      const lp = input(c.log_prob, [N]);
      const old = input(c.old_log_prob, [N]);
      const adv = input(c.advantages, [N]);
      const loss = output([1]);
      const stats = output([2]);
      e().ddpoIsForward(loss, stats, lp, old, adv, c.clip_range, c.adv_clip_max);
      expect(errorOf(loss, [c.is_loss], "engine DDPO_IS loss")).toBeLessThan(FWD_TOL);
      const [kl, clipFraction] = stats.read();
      expect(scalarError(kl ?? Number.NaN, c.approx_kl, "engine approx_kl")).toBeLessThan(FWD_TOL);
      expect(clipFraction).toBe(Math.fround(c.clip_fraction));
      const dlp = output([N]);
      e().ddpoIsBackward(dlp, 1, lp, old, adv, c.clip_range, c.adv_clip_max);
      expect(errorOf(dlp, c.is_grad_log_prob, "engine DDPO_IS grad_log_prob")).toBeLessThan(GRAD_TOL);
    });

    test(`${name}: DDPO_SF loss and gradient`, () => {
      const lp = input(c.log_prob, [N]);
      const adv = input(c.advantages, [N]);
      const loss = output([1]);
      e().ddpoSfForward(loss, lp, adv, c.adv_clip_max);
      expect(errorOf(loss, [c.sf_loss], "engine DDPO_SF loss")).toBeLessThan(FWD_TOL);
      const dlp = output([N]);
      e().ddpoSfBackward(dlp, 1, adv, c.adv_clip_max);
      expect(errorOf(dlp, c.sf_grad_log_prob, "engine DDPO_SF grad_log_prob")).toBeLessThan(GRAD_TOL);
    });
  });
});
