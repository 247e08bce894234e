// Bad input: every misuse returns a clear error (GpuCoreError with the C message) and the process
// and the engine live on.
import { afterAll, describe, expect, test } from "bun:test";
import { Engine, GpuCoreError, type StatusCode } from "../../gpu-core/index.ts";

const engine = Engine.open();
afterAll(() => engine.close());

function expectError(fn: () => unknown, code: StatusCode, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(GpuCoreError);
  const err = caught as GpuCoreError;
  expect(err.code).toBe(code);
  expect(err.message).toMatch(message);
}

describe("bad input is refused with a clear error", () => {
  test("wrong rank and mismatched shapes", () => {
    const x = engine.zeros([2, 3, 8, 8]);
    const w = engine.zeros([4, 5, 3, 3]);
    const y = engine.zeros([2, 4, 8, 8]);
    expectError(() => engine.conv2dForward(y, x, w, null, 1, 1), "SHAPE", /w has 5 input channels but x has 3/);
    const flat = engine.zeros([6]);
    expectError(() => engine.conv2dForward(y, flat, w, null, 1, 1), "SHAPE", /x must be 4-D \[B,C,H,W\], got \[6\]/);
    const w3 = engine.zeros([4, 3, 3, 3]);
    const yBad = engine.zeros([2, 4, 7, 8]);
    expectError(
      () => engine.conv2dForward(yBad, x, w3, null, 1, 1),
      "SHAPE",
      /y must have shape \[2,4,8,8\], got \[2,4,7,8\]/,
    );
    expectError(() => engine.conv2dForward(y, x, w3, null, 0, 1), "INVALID_ARGUMENT", /stride must be >= 1/);
    const lin = engine.zeros([5, 7]);
    const lw = engine.zeros([3, 6]);
    const ly = engine.zeros([5, 3]);
    expectError(() => engine.linearForward(ly, lin, lw, null), "SHAPE", /last dim is 7 but w expects 6/);
    const a = engine.zeros([4]);
    const b = engine.zeros([5]);
    expectError(() => engine.copy(a, b), "SHAPE", /must have 5 elements/);
    expectError(() => engine.addForward(a, a, b), "SHAPE", /leading prefix/);
    const gx = engine.zeros([2, 6, 4]);
    const stat = engine.zeros([2, 4]);
    expectError(
      () => engine.groupNormForward(gx, stat, stat, gx, null, null, 4, 1e-5),
      "INVALID_ARGUMENT",
      /groups \(4\) must divide channels \(6\)/,
    );
    const q = engine.zeros([2, 4, 8]);
    const k = engine.zeros([2, 5, 8]);
    const probs = engine.zeros([2, 2, 4, 5]);
    expectError(
      () => engine.attentionForward(q, probs, q, k, k, 3, false),
      "INVALID_ARGUMENT",
      /heads \(3\) must divide/,
    );
    expectError(() => engine.attentionForward(q, probs, q, k, k, 2, true), "SHAPE", /causal attention needs Tq == Tk/);
    for (const t of [x, w, y, flat, w3, yBad, lin, lw, ly, a, b, gx, stat, q, k, probs]) t.close();
  });

  test("the fused feed-forward checks its weights against each other and x", () => {
    const x = engine.zeros([4, 6]);
    const y = engine.zeros([4, 6]);
    const w1 = engine.zeros([10, 6]); // 2F = 10: F = 5
    const w1Odd = engine.zeros([9, 6]);
    const w2 = engine.zeros([6, 5]);
    const w2Bad = engine.zeros([6, 4]);
    const xBad = engine.zeros([4, 7]);
    const b1Bad = engine.zeros([9]);
    expectError(
      () => engine.gegluFeedForward(y, x, w1Odd, null, w2, null),
      "SHAPE",
      /w1's first dim \(9\) must be even/,
    );
    expectError(
      () => engine.gegluFeedForward(y, x, w1, null, w2Bad, null),
      "SHAPE",
      /w2 takes 4 inputs but w1 gives 5/,
    );
    expectError(() => engine.gegluFeedForward(y, xBad, w1, null, w2, null), "SHAPE", /last dim is 7 but w1 expects 6/);
    expectError(() => engine.gegluFeedForward(y, x, w1, b1Bad, w2, null), "SHAPE", /b1 must have shape \[10\]/);
    engine.gegluFeedForward(y, x, w1, null, w2, null); // and the engine still works
    expect(Array.from(y.read())).toEqual(new Array(24).fill(0));
    for (const t of [x, y, w1, w1Odd, w2, w2Bad, xBad, b1Bad]) t.close();
  });

  test("out-of-range token ids, bad DDIM alphas, bad optimizer settings", () => {
    const ids = engine.fromInt32([0, 1, 70, 2], [1, 4]);
    const tok = engine.zeros([64, 8]);
    const y = engine.zeros([1, 4, 8]);
    expectError(
      () => engine.embeddingForward(y, ids, tok, null),
      "INVALID_ARGUMENT",
      /token id 70 at \[0,2\] is outside \[0,64\)/,
    );
    const fids = engine.zeros([1, 4]);
    expect(engine.lib.gc_embedding_forward(engine.handle, y.handle, fids.handle, tok.handle, 0)).toBe(1);
    expect(String(engine.lib.gc_last_error())).toMatch(/ids must be i32/);
    const x = engine.zeros([2, 3]);
    const lp = engine.zeros([2]);
    expectError(
      () => engine.ddimStepLogProb(lp, null, x, x, x, [0.5, 0.5], [0.4, 0.6], 1),
      "INVALID_ARGUMENT",
      /sample 0: alpha_prev \(0.4\) must be >= alpha_t \(0.5\)/,
    );
    expectError(
      () => engine.ddimStepLogProb(lp, null, x, x, x, [0.5, Number.NaN], [0.6, 0.6], 1),
      "INVALID_ARGUMENT",
      /sample 1: alphas must lie in \(0,1\]/,
    );
    // One rule per argument, checked once in core (docs/DESIGN.md §4.1): eta > 0, a step to less
    // noise, adv_clip_max > 0.
    expectError(
      () => engine.ddimStepLogProb(lp, null, x, x, x, [0.5, 0.5], [0.6, 0.6], 0),
      "INVALID_ARGUMENT",
      /eta must be finite and > 0 \(got 0\)/,
    );
    expectError(
      () => engine.ddimStepLogProb(lp, null, x, x, x, [0.5, 0.5], [0.6, 0.5], 1),
      "INVALID_ARGUMENT",
      /sample 1: sigma = 0 is not > 0/,
    );
    const one = engine.zeros([1]);
    expectError(
      () => engine.ddpoIsForward(one, null, lp, lp, lp, 1e-4, 0),
      "INVALID_ARGUMENT",
      /adv_clip_max must be finite and > 0 \(got 0\)/,
    );
    one.close();
    expectError(
      () => engine.ddimStepLogProb(lp, null, x, x, x, [0.5], [0.6], 1),
      "SHAPE",
      /one value per sample \(2\)/,
    );
    expectError(() => engine.adamwStep(x, x, x, x, { lr: 1e-3, step: 0 }), "INVALID_ARGUMENT", /step must be >= 1/);
    expectError(() => engine.adamwStep(x, x, x, x, { lr: Number.NaN, step: 1 }), "INVALID_ARGUMENT", /need lr >= 0/);
    expectError(() => engine.axpby(x, Number.NaN, x, 1), "INVALID_ARGUMENT", /alpha must be finite/);
    for (const t of [ids, tok, y, fids, x, lp]) t.close();
  });

  test("closed, stale and foreign handles", () => {
    const t = engine.zeros([3]);
    const stale = t.handle;
    t.close();
    t.close(); // safe twice
    expectError(() => t.read(), "HANDLE", /closed/);
    expect(engine.lib.gc_fill(engine.handle, stale, 1)).toBe(3);
    expect(String(engine.lib.gc_last_error())).toMatch(/closed or stale/);
    expect(engine.lib.gc_fill(engine.handle, 0, 1)).toBe(3);
    expect(engine.lib.gc_fill(engine.handle, -5, 1)).toBe(3);
    expect(engine.lib.gc_fill(engine.handle, 2 ** 40 + 7, 1)).toBe(3);
    // A context handle where a tensor is expected, and a tensor from another context.
    expect(engine.lib.gc_fill(engine.handle, engine.handle, 1)).toBe(3);
    expect(String(engine.lib.gc_last_error())).toMatch(/is a context, expected a tensor/);
    const other = Engine.open();
    const foreign = other.zeros([3]);
    expectError(() => engine.fill(foreign, 1), "HANDLE", /belongs to another context/);
    other.close();
    expectError(() => foreign.read(), "HANDLE", /closed or stale/);
    foreign.close();
    other.close();
    // Arena reset releases its tensors: their handles go stale, the arena is reusable.
    const arena = engine.arena(1 << 16);
    const a1 = engine.tensor([16], { arena });
    const a1Handle = a1.handle;
    arena.reset();
    expect(a1.closed).toBe(true);
    expect(engine.lib.gc_fill(engine.handle, a1Handle, 0)).toBe(3);
    const a2 = engine.zeros([16], { arena });
    expect(Array.from(a2.read())).toEqual(new Array(16).fill(0));
    arena.close();
    expect(a2.closed).toBe(true);
  });

  test("allocations that cannot be satisfied", () => {
    expectError(() => engine.tensor([2 ** 30, 2 ** 30, 2 ** 10]), "OUT_OF_MEMORY", /shape too large/);
    expectError(() => engine.tensor([2 ** 40]), "OUT_OF_MEMORY", /cannot allocate/);
    expectError(() => engine.tensor([0, 3]), "SHAPE", /dimensions must be >= 1/);
    expectError(() => engine.tensor([1, 2, 3, 4, 5, 6, 7]), "SHAPE", /1\.\.6 dims/);
    expectError(() => engine.arena(2 ** 50), "OUT_OF_MEMORY", /cannot allocate an arena/);
    const t = engine.zeros([4]);
    expectError(() => t.write(new Float32Array(5)), "SHAPE", /5 elements at offset 0 exceed the tensor's 4 elements/);
    expectError(() => t.view(2, [3]), "SHAPE", /exceeds the source's 4 elements/);
    t.close();
  });

  test("the engine still works after all of the above", () => {
    const x = engine.fromArray([1, 2, 3], [3]);
    const y = engine.zeros([3]);
    engine.axpby(y, 2, x, 0);
    expect(Array.from(y.read())).toEqual([2, 4, 6]);
    x.close();
    y.close();
  });

  test("unknown backend options are refused", () => {
    expectError(() => Engine.open({ options: "bogus=1" }), "INVALID_ARGUMENT", /unknown CPU backend option/);
  });
});
