// The machine's own sgemm rate, measured through the engine (a bias-free linearForward is one
// oneDNN f32 matmul on the CPU backend, within ~5% of OpenBLAS's sgemm at this size on the Xeon
// of bench/RESULTS.md, one cublasSgemm on CUDA): the denominator of every ratio.
import type { Engine } from "../gpu-core/index.ts";

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Median seconds of fn over `samples` runs after one warm-up (synchronised). */
export function timeIt(engine: Engine, fn: () => void, samples: number): number {
  fn();
  engine.synchronize();
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    fn();
    engine.synchronize();
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/** GFLOP/s of an n x n x n sgemm. */
export function sgemmGflops(engine: Engine, n = 1536, samples = 5): number {
  const x = engine.tensor([n, n]);
  const w = engine.tensor([n, n]);
  const y = engine.tensor([n, n]);
  engine.randn(x, 1, 0);
  engine.randn(w, 2, 0);
  const seconds = timeIt(engine, () => engine.linearForward(y, x, w, null), samples);
  for (const t of [x, w, y]) t.close();
  return (2 * n * n * n) / seconds / 1e9;
}
