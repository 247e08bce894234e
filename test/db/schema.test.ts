import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { sql } from "kysely";
import { MIGRATIONS_DIR, migrate, migrateDownAll, openDatabase } from "../../services/lib/db/database.ts";
import {
  CheckpointConflictError,
  checkpointLineage,
  countTrajectories,
  createRun,
  getCheckpoint,
  getRun,
  listEpochs,
  listRuns,
  recordEpoch,
  registerCheckpoint,
  rewardByEpoch,
  setRunStatus,
  trajectoryProvenance,
} from "../../services/lib/db/queries.ts";
import { Code, ServiceError } from "../../services/lib/grpc/index.ts";
import { databaseCall } from "../../services/lib/runs/database-calls.ts";
import { makeTrajectory, startTestPostgres, type TestDatabase, type TestPostgres } from "./postgres.ts";

const SHA = (c: string) => c.repeat(64);
/** Every migration in migrations/, in the order they apply. */
const ALL = readdirSync(MIGRATIONS_DIR)
  .filter((f) => f.endsWith(".ts"))
  .map((f) => f.slice(0, -3))
  .sort();
const TABLES = ["checkpoints", "epochs", "evaluation_scores", "latent_blobs", "rewards", "runs", "trajectories"];
const VIEWS = ["checkpoint_ancestry", "run_evaluation_by_epoch", "run_reward_by_epoch", "trajectory_provenance"];

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

async function relations(d: TestDatabase): Promise<{ tables: string[]; views: string[] }> {
  const { rows } = await sql<{ table_name: string; table_type: string }>`
    select table_name, table_type from information_schema.tables
    where table_schema = 'public' and table_name not like 'kysely_%' order by table_name
  `.execute(d.db);
  return {
    tables: rows.filter((r) => r.table_type === "BASE TABLE").map((r) => r.table_name),
    views: rows.filter((r) => r.table_type === "VIEW").map((r) => r.table_name),
  };
}

describe("migrations", () => {
  test("up from empty, idempotent re-run, down to empty, up again", async () => {
    expect(ALL.slice(0, 2)).toEqual(["20261125T1200_initial", "20261125T1300_reward_by_epoch_per_run"]);
    const d = await server.freshDatabase({ migrated: false });
    expect(await relations(d)).toEqual({ tables: [], views: [] });
    expect((await migrate(d.db)).applied).toEqual(ALL);
    expect(await relations(d)).toEqual({ tables: TABLES, views: VIEWS });
    expect((await migrate(d.db)).applied).toEqual([]);
    expect(await migrateDownAll(d.db)).toEqual([...ALL].reverse());
    expect(await relations(d)).toEqual({ tables: [], views: [] });
    expect((await migrate(d.db)).applied).toEqual(ALL);
  });

  test("two concurrent migrate() calls from separate pools: one applies, the other finds it done", async () => {
    const d = await server.freshDatabase({ migrated: false });
    const other = openDatabase({ url: d.url });
    try {
      const results = await Promise.all([migrate(d.db), migrate(other.db)]);
      const applied = results.map((r) => r.applied).sort((a, b) => b.length - a.length);
      expect(applied).toEqual([ALL, []]);
      expect(await relations(d)).toEqual({ tables: TABLES, views: VIEWS });
    } finally {
      await other.close();
    }
  });

  test("three processes starting at once: exactly one applies the migration", async () => {
    const d = await server.freshDatabase({ migrated: false });
    const children = [0, 1, 2].map(() =>
      Bun.spawn([process.execPath, "test/db/migrate-process.ts", d.url], { stdout: "pipe", stderr: "pipe" }),
    );
    const outputs = await Promise.all(
      children.map(async (child) => {
        const [out, err, code] = await Promise.all([
          new Response(child.stdout).text(),
          new Response(child.stderr).text(),
          child.exited,
        ]);
        expect({ code, err }).toEqual({ code: 0, err: "" });
        return JSON.parse(out.trim()) as string[];
      }),
    );
    expect(outputs.sort((a, b) => b.length - a.length)).toEqual([ALL, [], []]);
    expect(await relations(d)).toEqual({ tables: TABLES, views: VIEWS });
  });
});

describe("runs, checkpoints, epochs and the views", () => {
  let d: TestDatabase;
  beforeAll(async () => {
    d = await server.freshDatabase();
    // A 3-deep chain: base -> epoch-0 LoRA -> epoch-1 LoRA, and one unrelated base.
    await registerCheckpoint(d.db, { id: "base", kind: "base", sha256: SHA("a"), size_bytes: 1000, location: "/m/b" });
    await registerCheckpoint(d.db, { id: "other", kind: "base", sha256: SHA("f"), size_bytes: 5, location: "/m/o" });
    await createRun(d.db, {
      id: "r1",
      name: "jpeg",
      config: { lr: 3e-4, epochs: 3 },
      base_checkpoint_id: "base",
      prompt_set: "animals",
      rewards: [{ endpoint: "127.0.0.1:50052", name: "jpeg_compressibility", weight: 1 }],
      code_version: "abc123",
    });
    await registerCheckpoint(d.db, {
      id: "r1-e0",
      parent_id: "base",
      run_id: "r1",
      epoch: 0,
      kind: "lora",
      sha256: SHA("b"),
      size_bytes: 10,
      location: "/m/r1-e0",
    });
    await registerCheckpoint(d.db, {
      id: "r1-e1",
      parent_id: "r1-e0",
      run_id: "r1",
      epoch: 1,
      kind: "lora",
      sha256: SHA("c"),
      size_bytes: 10,
      location: "/m/r1-e1",
    });
    // Epoch 0 sampled by the base: rewards 1, 2, 3, 6. Epoch 1 by r1-e0: 10, (not yet scored), 20.
    const rows = [
      ...[1, 2, 3, 6].map((r, i) => makeTrajectory("r1", 0, i, "base", r)),
      ...[10, null, 20].map((r, i) => makeTrajectory("r1", 1, i, "r1-e0", r)),
    ];
    await d.db.insertInto("trajectories").values(rows).execute();
    await recordEpoch(d.db, {
      run_id: "r1",
      epoch: 0,
      loss: 0.5,
      approx_kl: 1e-3,
      kl_to_reference: 2e-4,
      checkpoint_id: "r1-e0",
      samples: 4,
    });
    // Epoch 2 recorded with no trajectories yet.
    await recordEpoch(d.db, { run_id: "r1", epoch: 2, loss: 0.25, samples: 0 });
  });

  test("createRun stores config and rewards as JSON, is idempotent, refuses a different run under the same id", async () => {
    const run = await getRun(d.db, "r1");
    expect(run?.config).toEqual({ lr: 3e-4, epochs: 3 });
    expect(run?.rewards).toEqual([{ endpoint: "127.0.0.1:50052", name: "jpeg_compressibility", weight: 1 }]);
    expect(run?.status).toBe("pending");
    expect(run?.created_at).toBeInstanceOf(Date);
    const again = await createRun(d.db, { id: "r1", name: "jpeg", config: { epochs: 3, lr: 3e-4 } });
    expect(again.created_at).toEqual(run!.created_at);
    await expect(createRun(d.db, { id: "r1", name: "jpeg", config: { lr: 1 } })).rejects.toThrow(
      'run "r1" already exists with another name or config',
    );
  });

  test("setRunStatus and listRuns", async () => {
    await createRun(d.db, { id: "r2", name: "second" });
    const failed = await setRunStatus(d.db, "r2", "failed", "sampler unreachable");
    expect(failed.status).toBe("failed");
    expect(failed.error).toBe("sampler unreachable");
    expect(failed.updated_at.getTime()).toBeGreaterThanOrEqual(failed.created_at.getTime());
    expect((await listRuns(d.db, { status: "failed" })).map((r) => r.id)).toEqual(["r2"]);
    expect((await listRuns(d.db)).map((r) => r.id).sort()).toEqual(["r1", "r2"]);
    await expect(setRunStatus(d.db, "nope", "running")).rejects.toThrow('no run "nope"');
    await expect(setRunStatus(d.db, "r2", "exploded" as never)).rejects.toThrow('unknown run status "exploded"');
  });

  test("registerCheckpoint is idempotent on id and refuses another sha256 under the same id", async () => {
    const same = await registerCheckpoint(d.db, {
      id: "r1-e0",
      parent_id: "base",
      run_id: "r1",
      epoch: 0,
      kind: "lora",
      sha256: SHA("b"),
      size_bytes: 10,
      location: "/m/r1-e0",
    });
    expect(same.sha256).toBe(SHA("b"));
    const conflicting = registerCheckpoint(d.db, {
      id: "r1-e0",
      parent_id: "base",
      run_id: "r1",
      epoch: 0,
      kind: "lora",
      sha256: SHA("d"),
      size_bytes: 10,
      location: "/m/r1-e0",
    });
    await expect(conflicting).rejects.toThrow(CheckpointConflictError);
    await expect(conflicting).rejects.toThrow(/already registered with other contents: sha256 "b{64}" != "d{64}"/);
    expect((await getCheckpoint(d.db, "r1-e0"))?.sha256).toBe(SHA("b"));
    // A parent that does not exist is a foreign-key error, not a silent orphan.
    await expect(
      registerCheckpoint(d.db, {
        id: "x",
        parent_id: "ghost",
        kind: "full",
        sha256: SHA("e"),
        size_bytes: 1,
        location: "/x",
      }),
    ).rejects.toThrow(/foreign key/);
  });

  test("lineage of a 3-deep chain: function and checkpoint_ancestry view agree", async () => {
    const chain = await checkpointLineage(d.db, "r1-e1");
    expect(chain.map((c) => [c.id, c.depth, c.kind, c.run_id, c.epoch])).toEqual([
      ["r1-e1", 0, "lora", "r1", 1],
      ["r1-e0", 1, "lora", "r1", 0],
      ["base", 2, "base", null, null],
    ]);
    expect(chain[2]?.size_bytes).toBe(1000);
    expect(await checkpointLineage(d.db, "unknown")).toEqual([]);

    const view = await d.db
      .selectFrom("checkpoint_ancestry")
      .select(["ancestor_id", "depth", "ancestor_kind", "ancestor_run_id", "ancestor_epoch"])
      .where("checkpoint_id", "=", "r1-e1")
      .orderBy("depth")
      .execute();
    expect(view).toEqual([
      { ancestor_id: "r1-e1", depth: 0, ancestor_kind: "lora", ancestor_run_id: "r1", ancestor_epoch: 1 },
      { ancestor_id: "r1-e0", depth: 1, ancestor_kind: "lora", ancestor_run_id: "r1", ancestor_epoch: 0 },
      { ancestor_id: "base", depth: 2, ancestor_kind: "base", ancestor_run_id: null, ancestor_epoch: null },
    ]);
    // Descendants of the base: itself, both LoRAs; never the unrelated base.
    const descendants = await d.db
      .selectFrom("checkpoint_ancestry")
      .select("checkpoint_id")
      .where("ancestor_id", "=", "base")
      .orderBy("depth")
      .execute();
    expect(descendants.map((r) => r.checkpoint_id)).toEqual(["base", "r1-e0", "r1-e1"]);
  });

  test("run_reward_by_epoch matches statistics computed by hand", async () => {
    const rows = await rewardByEpoch(d.db, "r1");
    expect(rows.map((r) => [r.epoch, r.trajectories, r.rewarded])).toEqual([
      [0, 4, 4],
      [1, 3, 2],
      [2, 0, 0],
    ]);
    const [e0, e1, e2] = rows;
    // Epoch 0: rewards 1, 2, 3, 6 -> mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5.
    expect(e0!.reward_mean).toBeCloseTo(3, 12);
    expect(e0!.reward_std).toBeCloseTo(Math.sqrt(3.5), 12);
    expect([e0!.reward_min, e0!.reward_max]).toEqual([1, 6]);
    expect([e0!.loss, e0!.approx_kl, e0!.kl_to_reference, e0!.checkpoint_id, e0!.samples]).toEqual([
      0.5,
      1e-3,
      2e-4,
      "r1-e0",
      4,
    ]);
    // Epoch 1: 10 and 20 scored, one unscored -> mean 15, std 5; no epoch stats yet.
    expect(e1!.reward_mean).toBeCloseTo(15, 12);
    expect(e1!.reward_std).toBeCloseTo(5, 12);
    expect([e1!.reward_min, e1!.reward_max, e1!.loss]).toEqual([10, 20, null]);
    // Epoch 2: stats recorded, no trajectories.
    expect([e2!.reward_mean, e2!.loss, e2!.kl_to_reference]).toEqual([null, 0.25, null]);
  });

  test("recordEpoch replaces a re-recorded epoch; listEpochs in order", async () => {
    await recordEpoch(d.db, { run_id: "r1", epoch: 2, loss: 0.125, samples: 8, seconds: 1.5 });
    const epochs = await listEpochs(d.db, "r1");
    expect(epochs.map((e) => [e.epoch, e.loss, e.samples])).toEqual([
      [0, 0.5, 4],
      [2, 0.125, 8],
    ]);
    expect(epochs[1]?.seconds).toBe(1.5);
  });

  test("trajectory_provenance names the checkpoint that sampled a trajectory, with its parent", async () => {
    const p = await trajectoryProvenance(d.db, { runId: "r1", epoch: 1, sampleIndex: 2 });
    expect(p).toMatchObject({
      checkpoint_id: "r1-e0",
      checkpoint_kind: "lora",
      checkpoint_parent_id: "base",
      checkpoint_run_id: "r1",
      checkpoint_epoch: 0,
      reward: 20,
      seed: 2 ** 40 + 1002,
    });
    expect((await trajectoryProvenance(d.db, { runId: "r1", epoch: 0, sampleIndex: 0 }))?.checkpoint_kind).toBe("base");
    expect(await countTrajectories(d.db, "r1")).toBe(7);
    expect(await countTrajectories(d.db, "r1", 1)).toBe(3);
  });

  test("the schema refuses malformed rows", async () => {
    const bad = { ...makeTrajectory("r1", 5, 0, "base"), log_probs: [-1, -2] };
    await expect(d.db.insertInto("trajectories").values(bad).execute()).rejects.toThrow(
      /trajectories_one_log_prob_per_step/,
    );
    await expect(
      registerCheckpoint(d.db, { id: "y", kind: "full", sha256: "not-hex", size_bytes: 1, location: "/y" }),
    ).rejects.toThrow(/check constraint/);
  });

  test("databaseCall: values Postgres refuses become statuses that name the SQLSTATE, not Postgres's text", async () => {
    const refused = async (fn: () => Promise<unknown>) => {
      const error = await databaseCall("Test", fn).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ServiceError);
      return error as ServiceError;
    };
    const nul = await refused(() => createRun(d.db, { id: "nul\0id", name: "n" }));
    expect([nul.code, nul.message]).toEqual([
      Code.INVALID_ARGUMENT,
      "Test: a text field is not valid text (SQLSTATE 22021)",
    ]);
    const big = await refused(() =>
      registerCheckpoint(d.db, { id: "big", kind: "base", sha256: SHA("a"), size_bytes: 2 ** 64, location: "/m" }),
    );
    expect(big.code).toBe(Code.INVALID_ARGUMENT);
    expect(big.message).toMatch(/^Test: a (number is out of range|value is invalid) \(SQLSTATE 22\w{3}\)$/);
    const orphan = await refused(() =>
      registerCheckpoint(d.db, {
        id: "o",
        kind: "base",
        run_id: "no-run",
        sha256: SHA("a"),
        size_bytes: 1,
        location: "/m",
      }),
    );
    expect([orphan.code, orphan.message]).toEqual([
      Code.NOT_FOUND,
      "Test: it refers to a run or checkpoint that does not exist (SQLSTATE 23503)",
    ]);
  });
});
