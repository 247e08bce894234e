import { describe, expect, test } from "bun:test";
import { PerPromptStatTracker } from "../../services/lib/ddpo/stat-tracker.ts";
import { Mulberry32 } from "../../services/lib/training/random.ts";

const EPS = 1e-6;

describe("PerPromptStatTracker", () => {
  test("hand-worked example: buffer stats, batch fallback, rolling buffer", () => {
    const tracker = new PerPromptStatTracker(3, 2);

    // Batch 1: a's buffer [1, 3] reaches minCount 2 -> its own mean 2, std 1.
    // b's buffer [5] is below minCount -> the whole batch's mean 3, std sqrt(8/3).
    const a1 = tracker.update(["a", "a", "b"], [1, 3, 5]);
    expect(a1[0]).toBeCloseTo(-1 / (1 + EPS), 12);
    expect(a1[1]).toBeCloseTo(1 / (1 + EPS), 12);
    expect(a1[2]).toBeCloseTo(2 / (Math.sqrt(8 / 3) + EPS), 12);

    // Batch 2: this batch's rewards are pushed first: a [1, 3, 5] -> mean 3, std sqrt(8/3);
    // b [5, 7] -> mean 6, std 1.
    const a2 = tracker.update(["a", "b"], [5, 7]);
    expect(a2[0]).toBeCloseTo(2 / (Math.sqrt(8 / 3) + EPS), 12);
    expect(a2[1]).toBeCloseTo(1 / (1 + EPS), 12);

    // Batch 3: a's buffer rolls to its last 3 rewards [3, 5, 9]: mean 17/3, std sqrt(168/27).
    const a3 = tracker.update(["a"], [9]);
    expect(a3[0]).toBeCloseTo((9 - 17 / 3) / (Math.sqrt(168 / 27) + EPS), 12);

    const stats = tracker.stats();
    expect(stats.get("a")).toEqual({ mean: 17 / 3, std: Math.sqrt(168 / 27), count: 3 });
    expect(stats.get("b")).toEqual({ mean: 6, std: 1, count: 2 });
    expect(tracker.toJSON().buffers).toEqual([
      ["a", [3, 5, 9]],
      ["b", [5, 7]],
    ]);
  });

  test("below minCount every prompt is normalised with the whole batch (population std)", () => {
    const tracker = new PerPromptStatTracker(); // defaults: buffer 16, min count 16
    expect([tracker.bufferSize, tracker.minCount]).toEqual([16, 16]);
    const prompts = ["cat", "dog", "cat", "owl", "dog", "cat"];
    const rewards = [0.5, -1, 2, 3, 0, 1.5];
    const mean = rewards.reduce((s, r) => s + r, 0) / rewards.length;
    const std = Math.sqrt(rewards.reduce((s, r) => s + (r - mean) ** 2, 0) / rewards.length);
    const adv = tracker.update(prompts, Float64Array.from(rewards));
    rewards.forEach((r, i) => {
      expect(adv[i]).toBeCloseTo((r - mean) / (std + EPS), 12);
    });
  });

  test("a prompt seen more than bufferSize times in one batch keeps its last rewards", () => {
    const tracker = new PerPromptStatTracker(2, 2);
    const adv = tracker.update(["x", "x", "x"], [0, 10, 20]);
    // buffer [10, 20]: mean 15, std 5; the dropped reward is still scored against it
    [-15, -5, 5].forEach((d, i) => {
      expect(adv[i]).toBeCloseTo(d / (5 + EPS), 12);
    });
    expect(tracker.stats().get("x")).toEqual({ mean: 15, std: 5, count: 2 });
  });

  test("advantages are not clipped", () => {
    const tracker = new PerPromptStatTracker(16, 16);
    const rewards = new Array(100).fill(0);
    rewards[0] = 1;
    const adv = tracker.update(new Array(100).fill("p"), rewards);
    expect(adv[0]!).toBeGreaterThan(9); // (1 - 0.01) / sqrt(0.0099) ~= 9.95
  });

  test("save and restore continues identically", () => {
    const rng = new Mulberry32(42);
    const names = ["cat", "dog", "owl", "ant"];
    const batch = () => {
      const prompts = Array.from({ length: 8 }, () => names[rng.int(names.length)]!);
      return { prompts, rewards: prompts.map(() => rng.next() * 4 - 2) };
    };
    const original = new PerPromptStatTracker(5, 3);
    for (let e = 0; e < 4; e++) {
      const b = batch();
      original.update(b.prompts, b.rewards);
    }
    const saved = JSON.parse(JSON.stringify(original.toJSON()));
    const resumed = new PerPromptStatTracker(5, 3);
    resumed.fromJSON(saved);
    const fromState = PerPromptStatTracker.fromState(saved);
    for (let e = 0; e < 4; e++) {
      const b = batch();
      const expected = [...original.update(b.prompts, b.rewards)];
      expect([...resumed.update(b.prompts, b.rewards)]).toEqual(expected);
      expect([...fromState.update(b.prompts, b.rewards)]).toEqual(expected);
    }
    expect(resumed.toJSON()).toEqual(original.toJSON());
  });

  test("bad input and mismatched state are refused", () => {
    expect(() => new PerPromptStatTracker(0, 1)).toThrow(/bufferSize/);
    expect(() => new PerPromptStatTracker(4, -1)).toThrow(/minCount/);
    const tracker = new PerPromptStatTracker(4, 2);
    expect(() => tracker.update(["a"], [1, 2])).toThrow(/1 prompts but 2 rewards/);
    expect(() => tracker.update(["a"], [Number.NaN])).toThrow(/not finite/);
    expect(tracker.update([], []).length).toBe(0);
    expect(() => tracker.fromJSON({ bufferSize: 8, minCount: 2, buffers: [] })).toThrow(/bufferSize 8/);
    expect(() => tracker.fromJSON({ bufferSize: 4, minCount: 2, buffers: [["a", [1, 2, 3, 4, 5]]] })).toThrow(
      /at most 4/,
    );
    expect(() =>
      tracker.fromJSON({
        bufferSize: 4,
        minCount: 2,
        buffers: [
          ["a", [1]],
          ["a", [2]],
        ],
      }),
    ).toThrow(/distinct/);
  });
});
