// Held-out evaluation (issue 15): settings are checked (held out of training, distinct seeds, a
// period); the shipped model's images of fixed prompts x seeds are scored by each reward and the
// content check, the same twice; the rows go to Postgres and run_evaluation_by_epoch aggregates
// them as computed by hand; a re-recorded epoch replaces its rows.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { createRun, evaluationByEpoch, recordEvaluation } from "../../services/lib/db/index.ts";
import {
  CONTENT_ALIGNMENT,
  CONTENT_TOP1,
  type EvaluationScore,
  evaluatePolicy,
  evaluationDue,
  evaluationProblems,
  guardVerdict,
  type HeldOutEvaluation,
  summariseEvaluation,
} from "../../services/lib/ddpo/evaluation.ts";
import { localSteps, runLocalEpoch } from "../../services/lib/ddpo/local-steps.ts";
import { promptSetFromList } from "../../services/lib/ddpo/prompts.ts";
import { DdpoTrainer } from "../../services/lib/ddpo/trainer.ts";
import { evaluatePrompts } from "../../services/lib/eval/prompt-eval.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";
import { TextToImageModel } from "../../services/lib/models/text-to-image.ts";
import { rewardByName } from "../../services/lib/rewards/index.ts";
import { evaluationMessages } from "../../services/lib/runs/run-messages.ts";
import { startTestPostgres, type TestPostgres } from "../db/postgres.ts";
import { tinyDdpoConfig } from "./tiny-config.ts";

const ROOT = join(import.meta.dir, "..", "..");
const engine = Engine.open();
const clip = ClipModel.load(engine, join(ROOT, "models", "emoji-clip"));
const model = TextToImageModel.load(engine, join(ROOT, "models", "emoji-base"));
let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
  clip.close();
  model.close();
  engine.close();
});

const TRAINING = ["cat face", "tiger", "dog face"];
const HELD_OUT: HeldOutEvaluation = {
  prompts: ["frog", "monkey face"],
  seeds: [900001, 900002],
  every: 5,
  stopBelow: null,
  bestBy: null,
};
const SAMPLING = { steps: 2, guidance: 3, eta: 1, batch: 4 };

describe("held-out evaluation", () => {
  test("settings: held out of training, distinct seeds, a positive period", () => {
    expect(evaluationProblems(HELD_OUT, TRAINING)).toEqual([]);
    const bad = evaluationProblems(
      {
        prompts: ["tiger", "tiger"],
        seeds: [1, 1, -2],
        every: 0,
        stopBelow: { metric: CONTENT_TOP1, fraction: 1.5 },
        bestBy: "",
      },
      TRAINING,
    );
    expect(bad).toEqual([
      "evaluation prompts must be distinct",
      "evaluation prompts must be held out of training; shared: tiger",
      "evaluation seeds must be integers in [0, 2^52)",
      "evaluation seeds must be distinct",
      "evaluation every must be a positive integer, got 0",
      "evaluation stopBelow fraction must be in (0, 1), got 1.5",
      "evaluation bestBy must name a metric",
    ]);
    expect([0, 1, 4, 5, 10].map((e) => evaluationDue(HELD_OUT, e))).toEqual([true, false, false, true, true]);
  });

  test("every image scored by each reward and the content check, the same twice; recorded and aggregated", async () => {
    const jpeg = rewardByName("jpeg_compressibility");
    const a = await evaluatePolicy(model, null, clip, [jpeg], HELD_OUT, TRAINING, SAMPLING);
    const b = await evaluatePolicy(model, null, clip, [jpeg], HELD_OUT, TRAINING, SAMPLING);
    expect(b).toEqual(a);
    // 2 prompts x 2 seeds x (1 reward + 2 content metrics).
    expect(a.length).toBe(12);
    const of = (metric: string) => a.filter((s) => s.metric === metric);
    expect(of(jpeg.name).map((s) => [s.prompt, s.seed])).toEqual([
      ["frog", 900001],
      ["frog", 900002],
      ["monkey face", 900001],
      ["monkey face", 900002],
    ]);
    expect(of(CONTENT_TOP1).every((s) => s.value === 0 || s.value === 1)).toBe(true);
    // The content check is the CLIP's reading among evaluation and training prompts, per image.
    const direct = evaluatePrompts(model, clip, HELD_OUT.prompts, {
      ...SAMPLING,
      seeds: HELD_OUT.seeds,
      labels: [...HELD_OUT.prompts, ...TRAINING],
    });
    expect(of(CONTENT_TOP1).map((s) => s.value)).toEqual(direct.prompts.flatMap((p) => p.ranks.map((r) => +(r === 0))));
    expect(of(CONTENT_ALIGNMENT).map((s) => s.value)).toEqual(direct.prompts.flatMap((p) => p.alignments));

    const d = await server.freshDatabase();
    await createRun(d.db, { id: "guarded", name: "guarded", config: {} });
    await recordEvaluation(d.db, "guarded", 0, a);
    await recordEvaluation(d.db, "guarded", 5, a.slice(0, 4));
    await recordEvaluation(d.db, "guarded", 5, a.slice(0, 2)); // a retried evaluation replaces
    const rows = await evaluationByEpoch(d.db, "guarded");
    expect(rows.map((r) => [r.epoch, r.metric, r.images])).toEqual([
      [0, CONTENT_ALIGNMENT, 4],
      [0, CONTENT_TOP1, 4],
      [0, jpeg.name, 4],
      [5, jpeg.name, 2],
    ]);
    const values = of(jpeg.name).map((s) => s.value);
    const mean = values.reduce((x, y) => x + y, 0) / 4;
    const std = Math.sqrt(values.reduce((x, y) => x + (y - mean) ** 2, 0) / 4);
    const jpeg0 = rows.find((r) => r.epoch === 0 && r.metric === jpeg.name)!;
    expect(jpeg0.mean).toBeCloseTo(mean, 9);
    expect(jpeg0.std).toBeCloseTo(std, 9);
    expect([jpeg0.min, jpeg0.max]).toEqual([Math.min(...values), Math.max(...values)]);
    await expect(recordEvaluation(d.db, "no-such-run", 0, a)).rejects.toThrow();
    // Over the contract (Registry GetRun, WatchRun): one EvaluationReport per epoch.
    const messages = evaluationMessages(rows);
    expect(messages.map((m) => [m.epoch, m.metrics.map((x) => x.metric)])).toEqual([
      [0, [CONTENT_ALIGNMENT, CONTENT_TOP1, jpeg.name]],
      [5, [jpeg.name]],
    ]);
    expect(messages[0]!.metrics[2]!.mean).toBe(jpeg0.mean);
  }, 120_000);

  test("the guard: best epoch by a metric, stop when the content check falls below a fraction of its start", () => {
    const e: HeldOutEvaluation = {
      ...HELD_OUT,
      stopBelow: { metric: CONTENT_TOP1, fraction: 0.5 },
      bestBy: "jpeg_compressibility",
    };
    const at = (epoch: number, top1: number, jpeg: number) => ({
      epoch,
      means: { [CONTENT_TOP1]: top1, jpeg_compressibility: jpeg },
    });
    expect(guardVerdict(e, [])).toEqual({ best: null, stop: null });
    // The summary is the per-metric mean of the rows.
    const summary = summariseEvaluation(5, [
      { prompt: "frog", seed: 1, metric: CONTENT_TOP1, value: 1 },
      { prompt: "frog", seed: 2, metric: CONTENT_TOP1, value: 0 },
      { prompt: "owl", seed: 1, metric: CONTENT_TOP1, value: 1 },
      { prompt: "frog", seed: 1, metric: "jpeg_compressibility", value: -2 },
    ]);
    expect(summary).toEqual({ epoch: 5, means: { [CONTENT_TOP1]: 2 / 3, jpeg_compressibility: -2 } });
    const history = [at(0, 0.8, -5), at(5, 0.6, -3), at(10, 0.41, -2), at(15, 0.39, -1)];
    // 0.41 >= 0.5 x 0.8: go on; the best so far is epoch 10.
    expect(guardVerdict(e, history.slice(0, 3))).toEqual({
      best: { epoch: 10, metric: "jpeg_compressibility", mean: -2 },
      stop: null,
    });
    const v = guardVerdict(e, history);
    expect(v.best).toEqual({ epoch: 15, metric: "jpeg_compressibility", mean: -1 });
    expect(v.stop).toBe(`${CONTENT_TOP1} fell to 0.390 at epoch 15, below 0.5 x its start 0.800`);
    // Best by the content check: the start, the earliest among ties.
    expect(guardVerdict({ ...e, bestBy: CONTENT_TOP1 }, [at(0, 0.8, 0), at(5, 0.8, 0)]).best!.epoch).toBe(0);
    expect(() => guardVerdict({ ...e, bestBy: "aesthetic" }, history)).toThrow("no metric 'aesthetic'");
    // A negative start (-2): a fall of more than half its magnitude, below -3, stops.
    const negative = { ...e, stopBelow: { metric: "jpeg_compressibility", fraction: 0.5 }, bestBy: null };
    expect(guardVerdict(negative, [at(0, 1, -2), at(1, 1, -2.9)]).stop).toBeNull();
    expect(guardVerdict(negative, [at(0, 1, -2), at(1, 1, -3.1)]).stop).toBe(
      "jpeg_compressibility fell to -3.10 at epoch 1, below 0.5 x its start -2.00",
    );
  });

  test("in the epoch pipeline: the starting model is evaluated before epoch 1, then every period; the verdict follows", async () => {
    const jpeg = rewardByName("jpeg_compressibility");
    const e: HeldOutEvaluation = { ...HELD_OUT, every: 2, stopBelow: null, bestBy: jpeg.name };
    const baseline = await evaluatePolicy(model, null, clip, [jpeg], e, TRAINING, SAMPLING);
    const config = tinyDdpoConfig({
      sampleBatchSize: 2,
      steps: 2,
      gradientAccumulation: 1,
      lr: 3e-2,
      evaluation: e,
    });
    const trainingPrompts = promptSetFromList("held-out-test", "training prompts", TRAINING);
    expect(() => localSteps(new DdpoTrainer(engine, model, config, jpeg, trainingPrompts))).toThrow("no CLIP");
    const trainer = new DdpoTrainer(engine, model, config, jpeg, trainingPrompts);
    const recorded = new Map<number, EvaluationScore[]>();
    const hooks = {
      evaluation: {
        clip,
        sampling: SAMPLING,
        record: (epoch: number, s: EvaluationScore[]) => void recorded.set(epoch, s),
      },
    };
    const verdicts = [];
    for (let i = 0; i < 2; i++) verdicts.push((await runLocalEpoch(trainer, hooks)).verdict);
    trainer.close();
    expect([...recorded.keys()]).toEqual([0, 2]);
    expect(recorded.get(0)).toEqual(baseline);
    // The adapters moved the policy: its held-out images changed.
    expect(recorded.get(2)!.filter((s) => s.metric === jpeg.name)).not.toEqual(
      baseline.filter((s) => s.metric === jpeg.name),
    );
    const history = [summariseEvaluation(0, recorded.get(0)!), summariseEvaluation(2, recorded.get(2)!)];
    expect(verdicts).toEqual([guardVerdict(e, history.slice(0, 1)), guardVerdict(e, history)]);
    expect(verdicts[1]!.best!.metric).toBe(jpeg.name);
  }, 120_000);
});
