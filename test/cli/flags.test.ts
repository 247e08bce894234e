// The DDPO hyper-parameters from `ddpo train` / `train-local` flags: typed, checked, over the defaults.
import { describe, expect, test } from "bun:test";
import { configFromFlags, evaluationFromFlags } from "../../services/cli/train.ts";
import { DDPO_DEFAULTS } from "../../services/lib/ddpo/trainer.ts";

describe("configFromFlags", () => {
  test("flags override the defaults; the rest stay", () => {
    const c = configFromFlags({ lr: "3e-3", skipFinalSteps: "2", loss: "ddpo_sf", "lora-rank": "8", model: "m" });
    expect(c).toEqual({ ...DDPO_DEFAULTS, lr: 3e-3, skipFinalSteps: 2, loss: "ddpo_sf", lora: { rank: 8, alpha: 8 } });
    expect(configFromFlags({ full: true }).lora).toBeNull();
    expect(configFromFlags({})).toEqual(DDPO_DEFAULTS);
    expect(configFromFlags({ "stat-min-count": "4" }).statTracking).toEqual({ bufferSize: 16, minCount: 4 });
    expect(configFromFlags({ "stat-buffer": "32", "stat-min-count": "8" }).statTracking).toEqual({
      bufferSize: 32,
      minCount: 8,
    });
  });

  test("a value that is not a number, an unknown loss and a fractional rank name the flag", () => {
    expect(() => configFromFlags({ lr: "fast" })).toThrow("--lr must be a number, got 'fast'");
    expect(() => configFromFlags({ steps: "" })).toThrow("--steps must be a number, got ''");
    expect(() => configFromFlags({ loss: "ppo" })).toThrow(
      "--loss must be one of ddpo_is, ddpo_sf, rwr, sparse_rwr, got 'ppo'",
    );
    expect(() => configFromFlags({ "lora-rank": "2.5" })).toThrow("--lora-rank must be an integer, got '2.5'");
    expect(() => configFromFlags({ "stat-buffer": "x" })).toThrow("--stat-buffer must be an integer, got 'x'");
  });
});

describe("evaluationFromFlags", () => {
  test("the held-out evaluation and the guard's rule from --eval-* flags", () => {
    expect(evaluationFromFlags({})).toBeNull();
    expect(
      evaluationFromFlags({
        "eval-prompts": "tea cup, red apple",
        "eval-seeds": "11,12",
        "eval-every": "5",
        "stop-below": "content:zero_shot_top1:0.5",
        "best-by": "jpeg_compressibility",
      }),
    ).toEqual({
      prompts: ["tea cup", "red apple"],
      seeds: [11, 12],
      every: 5,
      stopBelow: { metric: "content:zero_shot_top1", fraction: 0.5 },
      bestBy: "jpeg_compressibility",
    });
    expect(evaluationFromFlags({ "eval-prompts": "tea cup" })).toEqual({
      prompts: ["tea cup"],
      seeds: [1, 2, 3, 4],
      every: 1,
      stopBelow: null,
      bestBy: null,
    });
    expect(() => evaluationFromFlags({ "best-by": "x" })).toThrow("--best-by needs --eval-prompts");
    expect(() => evaluationFromFlags({ "eval-prompts": "a", "stop-below": "0.5" })).toThrow(
      "--stop-below must be METRIC:FRACTION, got '0.5'",
    );
    expect(() => evaluationFromFlags({ "eval-prompts": "a", "eval-every": "1.5" })).toThrow(
      "--eval-every must be an integer, got '1.5'",
    );
  });
});
