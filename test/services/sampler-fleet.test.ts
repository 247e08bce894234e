// The fleet's chunk scheduling (services/trainer/sampler-fleet.ts) on its own: a member that fails
// hands its chunk to another, a non-retryable failure ends the draw at once, a fleet with no live
// member gives up after the retry window, and StartRun's split message warns of idle Samplers.
import { describe, expect, test } from "bun:test";
import { describeSplit, drawChunks, planChunks, type SampleChunk } from "../../services/trainer/sampler-fleet.ts";

const plan = [
  { prompts: ["a", "b"], seeds: [1, 2] },
  { prompts: ["c", "d"], seeds: [3, 4] },
  { prompts: ["e", "f"], seeds: [5, 6] },
];

class Retryable extends Error {}

describe("drawing chunks over a fleet", () => {
  test("planChunks keeps each sample's seed and position", () => {
    expect(planChunks(plan).map((c) => [c.seeds, c.at])).toEqual([
      [
        [1, 2],
        [0, 1],
      ],
      [
        [3, 4],
        [2, 3],
      ],
      [
        [5, 6],
        [4, 5],
      ],
    ]);
  });

  test("a failing member's chunks are drawn by the others, each once", async () => {
    const drawn: [number, number][] = [];
    await drawChunks(planChunks(plan), {
      members: 3,
      draw: async (m: number, c: SampleChunk) => {
        await Bun.sleep(5);
        if (m === 1) throw new Retryable("member 1 is down");
        drawn.push([m, c.at[0]!]);
      },
      retryable: (e) => e instanceof Retryable,
      retryForMs: 10_000,
      signal: new AbortController().signal,
    });
    expect(drawn.map(([, at]) => at).sort()).toEqual([0, 2, 4]);
    expect(drawn.every(([m]) => m !== 1)).toBe(true);
  });

  test("a non-retryable failure ends the draw; no live member gives up after the retry window", async () => {
    const signal = new AbortController().signal;
    const bad = drawChunks(planChunks(plan), {
      members: 2,
      draw: async () => {
        throw new Error("bad request");
      },
      retryable: (e) => e instanceof Retryable,
      retryForMs: 10_000,
      signal,
    });
    await expect(bad).rejects.toThrow("bad request");
    const started = performance.now();
    const down = drawChunks(planChunks(plan), {
      members: 2,
      draw: async () => {
        throw new Retryable("unreachable");
      },
      retryable: (e) => e instanceof Retryable,
      retryForMs: 600,
      signal,
    });
    await expect(down).rejects.toThrow("unreachable");
    expect(performance.now() - started).toBeGreaterThanOrEqual(600);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  test("StartRun's work split warns when Samplers would get nothing", () => {
    expect(describeSplit(1, 8, ["a:1", "b:1", "c:1"])).toBe(
      "1 chunk of 8 samples per epoch over 3 Samplers: 2 Samplers will get no work (raise sample_batches_per_epoch to use them; they still stand in when one fails)",
    );
    expect(describeSplit(4, 8, ["a:1", "b:1"])).toBe("4 chunks of 8 samples per epoch over 2 Samplers");
  });
});
