// A real Postgres for the database tests: DATABASE_URL when set, else one embedded server per test
// file in a temporary folder on a free port. Each test or suite takes a fresh, migrated database.

import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { type DatabaseHandle, migrate, openDatabase } from "../../services/lib/db/database.ts";
import { EmbeddedPostgresServer } from "../../services/lib/db/embedded.ts";
import type { NewReward, NewTrajectory } from "../../services/lib/db/schema.ts";

export interface TestDatabase extends DatabaseHandle {
  name: string;
  url: string;
}

export interface TestPostgres {
  /** The server we started, or null when DATABASE_URL points at an existing one. */
  embedded: EmbeddedPostgresServer | null;
  /** A new empty database; migrated unless `migrated: false`. Dropped by stop(). */
  freshDatabase(options?: { migrated?: boolean }): Promise<TestDatabase>;
  /** Close every handle, drop the databases, stop the server and delete its folder. */
  stop(): Promise<void>;
}

let counter = 0;

/** A temporary folder to hold an embedded server's data folder. */
export async function tempDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "ddpo-pg-"));
  // mkdtemp makes it 0700; postgres, running unprivileged when we are root, must be able to enter.
  await chmod(dir, 0o755);
  return dir;
}

export async function startTestPostgres(): Promise<TestPostgres> {
  const external = process.env.DATABASE_URL;
  let embedded: EmbeddedPostgresServer | null = null;
  let dataDir: string | null = null;
  if (!external) {
    dataDir = await tempDataDir();
    embedded = await EmbeddedPostgresServer.start({ dataDir: join(dataDir, "data"), fast: true });
  }
  const adminUrl = external ?? embedded!.url();
  const created: TestDatabase[] = [];

  const admin = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  return {
    embedded,
    async freshDatabase(options = {}) {
      const name = `ddpo_test_${process.pid}_${++counter}_${Math.random().toString(36).slice(2, 8)}`;
      await admin((c) => c.query(`create database ${c.escapeIdentifier(name)}`));
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      const handle = openDatabase({ url: url.toString() });
      const database: TestDatabase = { ...handle, name, url: url.toString() };
      created.push(database);
      if (options.migrated !== false) await migrate(handle.db);
      return database;
    },
    async stop() {
      for (const d of created) await d.close();
      if (external) {
        await admin(async (c) => {
          for (const d of created) await c.query(`drop database if exists ${c.escapeIdentifier(d.name)} with (force)`);
        });
      }
      await embedded?.stop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A small trajectory row: 4 DDIM steps, log-probs and seed derived from the key. */
export function makeTrajectory(
  runId: string,
  epoch: number,
  sampleIndex: number,
  checkpointId: string,
  reward: number | null = sampleIndex,
): NewTrajectory {
  return {
    run_id: runId,
    epoch,
    sample_index: sampleIndex,
    prompt: `prompt ${sampleIndex % 3}`,
    input_ids: [49406, 100 + sampleIndex, 49407],
    seed: 2 ** 40 + epoch * 1000 + sampleIndex,
    timesteps: [750, 500, 250, 0],
    log_probs: [-1.5, -1.25, -1, -0.5],
    reward,
    advantage: null,
    checkpoint_id: checkpointId,
    latents_sha256: null,
    image_png: null,
  };
}

export function makeReward(
  runId: string,
  epoch: number,
  sampleIndex: number,
  name = "jpeg_compressibility",
): NewReward {
  return {
    run_id: runId,
    epoch,
    sample_index: sampleIndex,
    reward_name: name,
    value: -sampleIndex,
    source: "127.0.0.1:50052",
    weight: 1,
  };
}
