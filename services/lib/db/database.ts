// Connections, the database's location (DATABASE_URL or the embedded server), and migrations.

import { promises as fs } from "node:fs";
import { join, resolve } from "node:path";
import {
  FileMigrationProvider,
  Kysely,
  type MigrationResult,
  Migrator,
  NO_MIGRATIONS,
  PostgresDialect,
  sql,
} from "kysely";
import pg from "pg";
import { EmbeddedPostgresServer, ensureDatabase } from "./embedded.ts";
import type { Database } from "./schema.ts";

export const MIGRATIONS_DIR = resolve(import.meta.dir, "../../../migrations");

/** Session advisory lock held around migrations, on top of kysely's own (an arbitrary constant). */
const MIGRATION_LOCK_KEY = 7_401_220_117;

const INT8_OID = 20;

export interface DatabaseHandle {
  db: Kysely<Database>;
  pool: pg.Pool;
  /** Ends the pool; safe to call twice. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  url: string;
  /** Pool size (connections). */
  max?: number;
  /** How long to wait for a connection before failing, ms; bounds a call when the server is down. */
  connectionTimeoutMs?: number;
}

export function openDatabase(options: OpenDatabaseOptions): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    types: { getTypeParser: typeParser },
  });
  // A client whose server went away (shut down, restarted) emits 'error': on the pool when idle, on
  // the client when checked out between queries. Unhandled, either would kill the process. Queries
  // in flight still reject; the next one opens a new connection (or fails, and the caller retries).
  pool.on("error", () => undefined);
  pool.on("connect", (client) => client.on("error", () => undefined));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  let closed: Promise<void> | null = null;
  return {
    db,
    pool,
    close: () => {
      closed ??= db.destroy();
      return closed;
    },
  };
}

/** bigint (int8) as number: seeds stay below 2^52, counts far below 2^53. */
function typeParser(oid: number, format?: "text" | "binary"): (value: string) => unknown {
  if (oid === INT8_OID) return Number;
  return pg.types.getTypeParser(oid, format ?? "text");
}

export interface MigrationSummary {
  /** Names of the migrations this call applied (empty when the schema was current). */
  applied: string[];
}

/**
 * Bring the schema to the newest migration in migrations/. Safe when several processes start at
 * once: a session advisory lock serialises them, so the later ones find nothing left to do.
 */
export async function migrate(db: Kysely<Database>, migrationsDir = MIGRATIONS_DIR): Promise<MigrationSummary> {
  return db.connection().execute(async (conn) => {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
    try {
      const migrator = new Migrator({
        db: conn,
        provider: new FileMigrationProvider({ fs, path: { join }, migrationFolder: migrationsDir }),
      });
      const { error, results } = await migrator.migrateToLatest();
      throwOnFailure(error, results);
      return { applied: (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName) };
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
    }
  });
}

/** Undo every migration (tests, and a clean slate by hand). */
export async function migrateDownAll(db: Kysely<Database>, migrationsDir = MIGRATIONS_DIR): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: new FileMigrationProvider({ fs, path: { join }, migrationFolder: migrationsDir }),
  });
  const { error, results } = await migrator.migrateTo(NO_MIGRATIONS);
  throwOnFailure(error, results);
  return (results ?? []).map((r) => r.migrationName);
}

function throwOnFailure(error: unknown, results: MigrationResult[] | undefined): void {
  if (!error) return;
  const failed = results?.find((r) => r.status === "Error")?.migrationName;
  const reason = error instanceof Error ? error.message : String(error);
  throw new Error(failed ? `migration ${failed} failed: ${reason}` : `migrations failed: ${reason}`);
}

export interface DatabaseLocation {
  url: string;
  /** The server we started, when DATABASE_URL was not set; stopped by close(). */
  embedded: EmbeddedPostgresServer | null;
  close(): Promise<void>;
}

export interface ResolveDatabaseOptions {
  /** Defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** Embedded server's data folder; default $DDPO_DATA_DIR/postgres, else ./.ddpo/postgres. */
  dataDir?: string;
  /** Embedded server's port; default $DDPO_DB_PORT, else a free one. */
  port?: number;
  /** The database the product uses on the embedded server. */
  database?: string;
  onLog?: (line: string) => void;
}

/** DATABASE_URL when set; else start the embedded server and make sure its database exists. */
export async function resolveDatabase(options: ResolveDatabaseOptions = {}): Promise<DatabaseLocation> {
  const env = options.env ?? process.env;
  if (env.DATABASE_URL) return { url: env.DATABASE_URL, embedded: null, close: async () => undefined };
  const dataDir = options.dataDir ?? join(env.DDPO_DATA_DIR ?? ".ddpo", "postgres");
  const port = options.port ?? (env.DDPO_DB_PORT ? Number(env.DDPO_DB_PORT) : undefined);
  const embedded = await EmbeddedPostgresServer.start({ dataDir, port, onLog: options.onLog });
  const database = options.database ?? "ddpo";
  try {
    await ensureDatabase(embedded.url(), database);
  } catch (err) {
    await embedded.stop();
    throw err;
  }
  return { url: embedded.url(database), embedded, close: () => embedded.stop() };
}

export interface ProductDatabase extends DatabaseHandle {
  url: string;
  embedded: EmbeddedPostgresServer | null;
}

/**
 * What a service does at start-up: find the database (DATABASE_URL or the embedded server), open a
 * pool and bring the schema up to date. close() ends the pool, then stops the embedded server.
 */
export async function startDatabase(options: ResolveDatabaseOptions & { max?: number } = {}): Promise<ProductDatabase> {
  const location = await resolveDatabase(options);
  const handle = openDatabase({ url: location.url, max: options.max });
  try {
    await migrate(handle.db);
  } catch (err) {
    await handle.close();
    await location.close();
    throw err;
  }
  let closed: Promise<void> | null = null;
  return {
    ...handle,
    url: location.url,
    embedded: location.embedded,
    close: () => {
      closed ??= handle.close().then(() => location.close());
      return closed;
    },
  };
}

/**
 * Probes the database every `intervalMs` (`select 1`, given `intervalMs` to answer) and calls
 * `onChange(reachable)` when that flips, starting from reachable; returns a function that stops it.
 * Services use it to report NOT_SERVING on grpc.health.v1 while Postgres is gone.
 */
export function watchDatabase(
  db: Kysely<Database>,
  onChange: (reachable: boolean) => void,
  intervalMs = 2000,
): () => void {
  let reachable = true;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const probe = async () => {
    let answer: ReturnType<typeof setTimeout> | undefined;
    const ok = await Promise.race([
      sql`select 1`.execute(db).then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((r) => {
        answer = setTimeout(() => r(false), intervalMs);
      }),
    ]);
    clearTimeout(answer);
    if (stopped) return;
    if (ok !== reachable) {
      reachable = ok;
      onChange(ok);
    }
    timer = setTimeout(probe, intervalMs);
  };
  timer = setTimeout(probe, intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
