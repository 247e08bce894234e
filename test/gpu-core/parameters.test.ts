// Flat parameter buffers, AdamW and grad-norm clipping against formulas worked in float64 here.
import { afterAll, expect, test } from "bun:test";
import { Engine } from "../../gpu-core/index.ts";
import { FlatParameters } from "../../gpu-core/parameters.ts";

const engine = Engine.open();
afterAll(() => engine.close());

function randomArray(n: number, scale = 1): Float64Array {
  return Float64Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale);
}

test("named views alias the flat buffers", () => {
  const p = new FlatParameters(engine, [
    { name: "a.weight", shape: [2, 3] },
    { name: "a.bias", shape: [2] },
    { name: "b.weight", shape: [4] },
  ]);
  expect(p.total).toBe(12);
  expect(p.entries.map((e) => e.offset)).toEqual([0, 6, 8]);
  p.value("a.bias").write([7, 8]);
  p.grad("b.weight").write([1, 2, 3, 4]);
  expect(Array.from(p.values.read())).toEqual([0, 0, 0, 0, 0, 0, 7, 8, 0, 0, 0, 0]);
  expect(Array.from(p.grads.read(8))).toEqual([1, 2, 3, 4]);
  p.zeroGrad();
  expect(Array.from(p.grad("b.weight").read())).toEqual([0, 0, 0, 0]);
  expect(() => p.value("nope")).toThrow(/unknown parameter 'nope'/);
  expect(
    () =>
      new FlatParameters(engine, [
        { name: "x", shape: [1] },
        { name: "x", shape: [2] },
      ]),
  ).toThrow(/duplicate/);
  p.close();
});

test("AdamW matches PyTorch's update rule over several steps", () => {
  const n = 1000;
  const p = new FlatParameters(engine, [{ name: "w", shape: [n] }]);
  const w = randomArray(n);
  p.values.write(Float32Array.from(w));
  const m = new Float64Array(n);
  const v = new Float64Array(n);
  const o = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
  for (let step = 1; step <= 5; step++) {
    const g = randomArray(n, step);
    p.grads.write(Float32Array.from(g));
    p.adamwStep(o);
    for (let i = 0; i < n; i++) {
      const gi = Math.fround(g[i]!);
      w[i] = w[i]! * (1 - o.lr * o.weightDecay);
      m[i] = o.beta1 * m[i]! + (1 - o.beta1) * gi;
      v[i] = o.beta2 * v[i]! + (1 - o.beta2) * gi * gi;
      const mHat = m[i]! / (1 - o.beta1 ** step);
      const vHat = v[i]! / (1 - o.beta2 ** step);
      w[i] = w[i]! - (o.lr * mHat) / (Math.sqrt(vHat) + o.eps);
    }
  }
  const got = p.values.read();
  let maxErr = 0;
  for (let i = 0; i < n; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - w[i]!));
  expect(maxErr).toBeLessThan(1e-5);
  expect(p.step).toBe(5);
  const state = p.readOptimizerState();
  let mErr = 0;
  for (let i = 0; i < n; i++) mErr = Math.max(mErr, Math.abs(state.m[i]! - m[i]!));
  expect(mErr).toBeLessThan(1e-5);
  p.close();
});

test("grad-norm clipping follows torch.nn.utils.clip_grad_norm_", () => {
  const g = randomArray(5000, 3);
  const norm = Math.sqrt(g.reduce((s, x) => s + Math.fround(x) ** 2, 0));
  const t = engine.fromArray(Float32Array.from(g), [5000]);
  expect(engine.clipGradNorm(t, 0)).toBeCloseTo(norm, 3); // 0: measure only
  expect(t.read()).toEqual(Float32Array.from(g));
  const before = engine.clipGradNorm(t, 1.0);
  expect(Math.abs(before - norm) / norm).toBeLessThan(1e-6);
  const after = t.read();
  const coef = 1 / (norm + 1e-6);
  for (let i = 0; i < 5000; i += 97) expect(after[i]!).toBeCloseTo(Math.fround(g[i]!) * coef, 6);
  expect(engine.clipGradNorm(t, 0)).toBeCloseTo(1, 5);
  // Below the limit nothing changes.
  const small = engine.fromArray([0.1, 0.2], [2]);
  engine.clipGradNorm(small, 1);
  expect(Array.from(small.read())).toEqual([Math.fround(0.1), Math.fround(0.2)]);
  // A NaN gradient is reported, not spread.
  small.write([Number.NaN, 1]);
  expect(Number.isNaN(engine.clipGradNorm(small, 1))).toBe(true);
  t.close();
  small.close();
});
