// The gpu-core op tests on the CPU backend: every row of op-table.ts builds fresh random inputs, then
// checkOpCase (harness.ts) checks 1. the forward against the float64 reference (outputs poisoned
// with NaN first, every element finite, normalised error < 1e-5), 2. the backward against central
// differences of the reference for L = sum(out * probe) (param gradients accumulate onto a random
// pre-fill, activation gradients are written over NaN; error < 1e-3), 3. null optional outputs and
// gradients. A summary table of the observed errors is printed at the end.
// GPU_CORE_TEST_SEED=<seed> reproduces a run (the seed is printed in every failure).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Engine } from "../../gpu-core/index.ts";
import { baseSeed, caseSeed, checkOpCase, formatSummary, Rng, type SummaryRow } from "./harness.ts";
import { TABLE } from "./op-table.ts";

// ---- run -------------------------------------------------------------------------------------

const seed = baseSeed();
const summary: SummaryRow[] = [];
let engine: Engine | null = null;

describe(`gpu-core CPU ops (seed ${seed})`, () => {
  beforeAll(() => {
    engine = Engine.open({ backend: "cpu" });
  });
  afterAll(() => {
    console.log(`\n${formatSummary("gpu-core CPU op errors vs the float64 reference", seed, summary)}\n`);
    engine?.close();
  });

  for (const row of TABLE) {
    const name = `${row.op}: ${row.label}`;
    test(name, () => {
      if (!engine) throw new Error("engine did not open");
      const rng = new Rng(caseSeed(seed, name));
      const report = checkOpCase(engine, row.build(rng), rng, `${name} [seed ${seed}]`);
      summary.push({ name, report });
      expect(report.failures).toEqual([]);
    });
  }
});

// The fused group norm + SiLU rounds the norm to float before SiLU, forward and backward, as the
// two ops one after the other do: the forward is the same to the bit; the backward's double sums
// may run in another lane order (the fused loop vectorises differently), so it agrees to rounding.
test("group norm with fused SiLU equals group norm then SiLU", () => {
  const e = Engine.open({ backend: "cpu" });
  const rng = new Rng(caseSeed(seed, "fused group norm"));
  const [B, C, S, G] = [3, 32, 100, 8];
  const host = (n: number, f: () => number) => Float32Array.from({ length: n }, f);
  const x = e.fromArray(
    host(B * C * S, () => 2 * rng.normal() + 0.5),
    [B, C, S],
  );
  const dy = e.fromArray(
    host(B * C * S, () => rng.normal()),
    [B, C, S],
  );
  const gamma = e.fromArray(
    host(C, () => 1 + 0.3 * rng.normal()),
    [C],
  );
  const beta = e.fromArray(
    host(C, () => 0.5 * rng.normal()),
    [C],
  );
  const run = (fused: boolean) => {
    const [y, z, dx, dz] = [0, 1, 2, 3].map(() => e.tensor([B, C, S]));
    const [mean, rstd] = [e.tensor([B, G]), e.tensor([B, G])];
    const [dgamma, dbeta] = [e.tensor([C]), e.tensor([C])];
    e.fill(dgamma, 0);
    e.fill(dbeta, 0);
    if (fused) {
      e.groupNormForward(y!, mean, rstd, x, gamma, beta, G, 1e-5, true);
      e.groupNormBackward(dx!, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, G, true);
    } else {
      e.groupNormForward(z!, mean, rstd, x, gamma, beta, G, 1e-5);
      e.activationForward("silu", y!, z!);
      e.activationBackward("silu", dz!, dy, z!);
      e.groupNormBackward(dx!, dgamma, dbeta, dz!, x, mean, rstd, gamma, null, G);
    }
    return [y!, dx!, dgamma, dbeta].map((t) => t.read() as Float32Array);
  };
  const [fused, pair] = [run(true), run(false)];
  expect(Buffer.from(fused[0]!.buffer).equals(Buffer.from(pair[0]!.buffer))).toBe(true);
  for (let i = 1; i < fused.length; i++) {
    const [a, b] = [fused[i]!, pair[i]!];
    const scale = b.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const err = a.reduce((m, v, j) => Math.max(m, Math.abs(v - b[j]!)), 0) / scale;
    expect(err).toBeLessThan(1e-6);
  }
  e.close();
});
