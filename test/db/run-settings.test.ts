// runs.config holds a run's settings as the protobuf JSON of ddpo.v1.RunSettings; the migration
// 20261201T1200 turns rows written in the earlier form (the trainer's own DdpoConfig object) into it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { down, up } from "../../migrations/20261201T1200_run_settings_protobuf_json.ts";
import { createRun, getRun } from "../../services/lib/db/queries.ts";
import { DDPO_DEFAULTS, type DdpoConfig } from "../../services/lib/ddpo/trainer.ts";
import { type RunSettings, runSettingsFromJson, runSettingsJson } from "../../services/lib/runs/run-messages.ts";
import { startTestPostgres, type TestPostgres } from "./postgres.ts";

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

const settings = (ddpo: Partial<DdpoConfig>): RunSettings => ({
  ddpo: { ...DDPO_DEFAULTS, ...ddpo },
  baseModelDir: "/models/emoji-base",
  epochs: 3,
  samplerEndpoints: ["127.0.0.1:50061"],
  runDir: "/data/runs/r",
});

const VARIANTS: [string, Partial<DdpoConfig>][] = [
  ["LoRA, per-prompt statistics", { loss: "ddpo_is", lr: 3e-3, skipFinalSteps: 2, klCoefficient: 0.05 }],
  ["full fine-tuning, batch statistics, sparse RWR", { loss: "sparse_rwr", lora: null, statTracking: null }],
];

describe("run settings as protobuf JSON", () => {
  for (const [name, ddpo] of VARIANTS) {
    test(`round trip: ${name}`, () => {
      const s = settings(ddpo);
      const json = runSettingsJson(s);
      expect(Object.keys(json).sort()).toEqual(["baseModelDir", "ddpo", "epochs", "runDir", "samplerEndpoints"]);
      expect(runSettingsFromJson(JSON.parse(JSON.stringify(json)))).toEqual(s);
    });
  }

  test("what is not a RunSettings is refused, naming the problem", () => {
    expect(() => runSettingsFromJson({ ddpo: { loss: "ddpo_is" } })).toThrow("ddpo.v1.DdpoLoss");
    expect(() => runSettingsFromJson({ epochs: "many" })).toThrow("epochs");
    expect(() => runSettingsFromJson({ ddpo: { steps: 0 } })).toThrow("steps must be an integer in 1..1000");
    expect(() =>
      runSettingsFromJson({ ddpo: { evaluation: { prompts: ["frog"], seeds: ["9007199254740993"] } } }),
    ).toThrow("evaluation seeds must be integers in [0, 2^52)");
  });

  test("round trip: held-out evaluation and the KL penalty (fields newer than the migration)", () => {
    const s = settings({
      evaluation: {
        prompts: ["frog", "owl"],
        seeds: [7, 2 ** 52 - 1],
        every: 5,
        stopBelow: { metric: "content:zero_shot_top1", fraction: 0.4 },
        bestBy: "jpeg_compressibility",
      },
      klCoefficient: 0.01,
    });
    const json = runSettingsJson(s);
    expect((json.ddpo as { evaluation: unknown }).evaluation).toEqual({
      prompts: ["frog", "owl"],
      seeds: ["7", "4503599627370495"],
      every: 5,
      stopMetric: "content:zero_shot_top1",
      stopFraction: 0.4,
      bestMetric: "jpeg_compressibility",
    });
    expect(runSettingsFromJson(JSON.parse(JSON.stringify(json)))).toEqual(s);
  });

  test("the migration turns rows of the earlier form into RunSettings JSON, and back", async () => {
    const d = await server.freshDatabase();
    const rows = VARIANTS.map(([, ddpo], i) => ({ id: `old-${i}`, s: settings(ddpo) }));
    // The earlier form: the settings object as the Trainer held it (lora / statTracking null),
    // without the fields added since (evaluation).
    const earlier = (s: RunSettings) =>
      JSON.parse(JSON.stringify({ ...s, ddpo: { ...s.ddpo, evaluation: undefined } }));
    for (const { id, s } of rows) await createRun(d.db, { id, name: id, config: earlier(s) });
    await createRun(d.db, { id: "unrelated", name: "unrelated", config: { lr: 3e-4, epochs: 3 } });
    await up(d.db);
    for (const { id, s } of rows) {
      const config = (await getRun(d.db, id))!.config;
      expect(config).toEqual(runSettingsJson(s));
      expect(runSettingsFromJson(config)).toEqual(s);
    }
    expect((await getRun(d.db, "unrelated"))!.config).toEqual({ lr: 3e-4, epochs: 3 });
    await up(d.db); // rows already converted are left alone
    expect((await getRun(d.db, "old-1"))!.config).toEqual(runSettingsJson(rows[1]!.s));
    await down(d.db);
    for (const { id, s } of rows) expect((await getRun(d.db, id))!.config).toEqual(earlier(s));
  });
});
