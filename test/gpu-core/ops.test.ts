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
