// The DDPO hyper-parameters from `ddpo train` / `train-local` flags: typed, checked, over the defaults.
import { describe, expect, test } from "bun:test";
import { configFromFlags } from "../../services/cli/train.ts";
import { DDPO_DEFAULTS } from "../../services/lib/ddpo/trainer.ts";

describe("configFromFlags", () => {
  test("flags override the defaults; the rest stay", () => {
    const c = configFromFlags({ lr: "3e-3", skipFinalSteps: "2", loss: "ddpo_sf", "lora-rank": "8", model: "m" });
    expect(c).toEqual({ ...DDPO_DEFAULTS, lr: 3e-3, skipFinalSteps: 2, loss: "ddpo_sf", lora: { rank: 8, alpha: 8 } });
    expect(configFromFlags({ full: true }).lora).toBeNull();
    expect(configFromFlags({})).toEqual(DDPO_DEFAULTS);
  });

  test("a value that is not a number, an unknown loss and a fractional rank name the flag", () => {
    expect(() => configFromFlags({ lr: "fast" })).toThrow("--lr must be a number, got 'fast'");
    expect(() => configFromFlags({ steps: "" })).toThrow("--steps must be a number, got ''");
    expect(() => configFromFlags({ loss: "ppo" })).toThrow(
      "--loss must be one of ddpo_is, ddpo_sf, rwr, sparse_rwr, got 'ppo'",
    );
    expect(() => configFromFlags({ "lora-rank": "2.5" })).toThrow("--lora-rank must be an integer, got '2.5'");
  });
});
