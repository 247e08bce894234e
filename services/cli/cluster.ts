// `ddpo up` as a library: the database (embedded Postgres in <dataDir>/postgres, or DATABASE_URL)
// with migrations applied, then the four services (one Sampler or a fleet of them, which the
// Trainer balances over) and the web dashboard as child processes on loopback. A service that
// dies unexpectedly is restarted on the same address, so a run survives it (the Trainer resumes
// its runs from their last checkpoints). The addresses are written to <dataDir>/services.json
// for the other commands.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { migrate, openDatabase, resolveDatabase } from "../lib/db/database.ts";
import { EmbeddedPostgresServer } from "../lib/db/embedded.ts";

export type ServiceName = "registry" | "rewarder" | "sampler" | "trainer" | "dashboard";

export interface ClusterAddresses {
  registry: string;
  rewarder: string;
  /** The first Sampler (the dashboard's previews draw on it). */
  sampler: string;
  /** Every Sampler, the first included. */
  samplers: string[];
  /** The Trainer's default Sampler target: the one address, or an `ipv4:` fleet of them all. */
  samplerTarget: string;
  trainer: string;
  /** The web dashboard's host:port (http). */
  dashboard: string;
  databaseUrl: string;
}

export interface Cluster {
  addresses: ClusterAddresses;
  dataDir: string;
  /**
   * The process id of a service's current process (it changes when `up` restarts it); `index`
   * picks a Sampler of the fleet.
   */
  pid(name: ServiceName, index?: number): number | undefined;
  /** SIGTERM to every service, then the embedded database (if we started it). */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  dataDir: string;
  /** Bind host for the services (default loopback). */
  host?: string;
  /** Folders besides <dataDir>/runs the Registry may serve checkpoints from (default: models/). */
  modelRoots?: string[];
  /** Sampler processes to start (default 1); more than one are the Trainer's fleet. */
  samplers?: number;
  log?: (line: string) => void;
}

const ROOT = resolve(import.meta.dir, "../..");

/** Most Sampler processes `up` starts on one machine. */
export const MAX_LOCAL_SAMPLERS = 16;

/**
 * The Trainer's target for local Samplers: one address as it is; several as one `ipv4:` fleet
 * (round_robin) when bound to an IPv4 host, else a list of single Samplers.
 */
export function localSamplerTarget(addresses: readonly string[]): string {
  if (addresses.length === 1) return addresses[0]!;
  const ipv4 = addresses.every((a) => isIPv4(a.slice(0, a.lastIndexOf(":"))));
  return ipv4 ? `ipv4:${addresses.join(",")}` : addresses.join(",");
}

interface Child {
  /** "sampler", "sampler-2", ...: which child, for restarts and logs. */
  key: string;
  name: ServiceName;
  args: string[];
  address: string;
  proc: Subprocess<"ignore", "pipe", "inherit">;
}

/** Resident set size of a process in MiB (Linux: /proc/<pid>/status). */
export function residentMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB$/m);
  if (!line) throw new Error(`no VmRSS for process ${pid}`);
  return Number(line[1]) / 1024;
}

/** Spawns one service and waits for the JSON line announcing its address. */
async function spawnChild(key: string, name: ServiceName, args: string[], env: Record<string, string>): Promise<Child> {
  const proc = Bun.spawn([process.execPath, "run", join(ROOT, "services", name, "main.ts"), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const timeout = setTimeout(() => proc.kill("SIGKILL"), 120_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${key} exited before listening (code ${await proc.exited})`);
      text += decoder.decode(value);
      const line = text.split("\n").find((l) => l.startsWith("{") && l.endsWith("}"));
      if (line) {
        const { address } = JSON.parse(line) as { address: string };
        // Keep draining stdout so the child never blocks on a full pipe.
        (async () => {
          for (;;) if ((await reader.read()).done) break;
        })().catch(() => undefined);
        return { key, name, args, address, proc };
      }
    }
  } finally {
    clearTimeout(timeout);
  }
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const log = options.log ?? ((line: string) => console.error(line));
  const dataDir = resolve(options.dataDir);
  mkdirSync(dataDir, { recursive: true });
  const host = options.host ?? "127.0.0.1";
  const samplerCount = options.samplers ?? 1;
  if (!(Number.isInteger(samplerCount) && samplerCount >= 1 && samplerCount <= MAX_LOCAL_SAMPLERS)) {
    throw new Error(`samplers must be an integer from 1 to ${MAX_LOCAL_SAMPLERS}, not ${samplerCount}`);
  }
  const database = await resolveDatabase({ dataDir: join(dataDir, "postgres") });
  const handle = openDatabase({ url: database.url });
  await migrate(handle.db);
  await handle.close();
  const env = { DATABASE_URL: database.url };
  const children = new Map<string, Child>();
  let stopping = false;

  // The embedded Postgres is supervised like the services: restarted on its port and folder when
  // it dies (after a SIGKILL its old backends may hold shared memory for a moment: keep trying).
  let embedded = database.embedded;
  const superviseDatabase = (server: EmbeddedPostgresServer) => {
    server.exited.then(async () => {
      if (stopping) return;
      log(`[up] Postgres exited; restarting it on port ${server.port}`);
      for (let attempt = 1; !stopping; attempt++) {
        try {
          embedded = await EmbeddedPostgresServer.start({
            dataDir: server.dataDir,
            port: server.port,
            host: server.host,
          });
          if (stopping) await embedded.stop();
          else superviseDatabase(embedded);
          return;
        } catch (e) {
          if (attempt % 10 === 1) log(`[up] Postgres did not restart yet: ${(e as Error).message.split("\n")[0]}`);
          await Bun.sleep(1000);
        }
      }
    });
  };
  if (embedded) superviseDatabase(embedded);

  const supervise = (child: Child) => {
    child.proc.exited.then(async (code) => {
      if (stopping) return;
      log(`[up] ${child.key} exited (code ${code}); restarting on ${child.address}`);
      try {
        const again = await spawnChild(child.key, child.name, ["--address", child.address, ...child.args], env);
        again.args = child.args;
        children.set(child.key, again);
        supervise(again);
      } catch (e) {
        log(`[up] could not restart ${child.key}: ${(e as Error).message}`);
      }
    });
  };

  const start = async (name: ServiceName, args: string[], key: string = name) => {
    const child = await spawnChild(key, name, ["--address", `${host}:0`, ...args], env);
    // Restarts reuse the port the first start was given.
    child.args = args;
    children.set(key, child);
    supervise(child);
    return child.address;
  };

  try {
    const [registry, rewarder, ...samplers] = await Promise.all([
      start("registry", [
        "--data-dir",
        dataDir,
        ...(options.modelRoots?.length ? ["--model-roots", options.modelRoots.map((r) => resolve(r)).join(",")] : []),
      ]),
      start("rewarder", []),
      ...Array.from({ length: samplerCount }, (_, i) => start("sampler", [], samplerKey(i))),
    ]);
    const sampler = samplers[0]!;
    // Several Samplers are one fleet to the Trainer; each keeps its port across restarts, so the
    // target stays valid while `up` runs.
    const samplerTarget = localSamplerTarget(samplers);
    const trainer = await start("trainer", [
      "--registry",
      registry,
      "--rewarder",
      rewarder,
      "--samplers",
      samplerTarget,
      "--data-dir",
      dataDir,
    ]);
    // The dashboard asks the Sampler and Rewarder to draw a seed under each checkpoint, on request,
    // and follows live runs through the Trainer's WatchRun.
    const dashboard = await start("dashboard", ["--sampler", sampler, "--rewarder", rewarder, "--trainer", trainer]);
    const addresses: ClusterAddresses = {
      registry,
      rewarder,
      sampler,
      samplers,
      samplerTarget,
      trainer,
      dashboard,
      databaseUrl: database.url,
    };
    writeFileSync(join(dataDir, "services.json"), `${JSON.stringify(addresses, null, 2)}\n`);
    return {
      addresses,
      dataDir,
      pid: (name, index = 0) => children.get(name === "sampler" ? samplerKey(index) : name)?.proc.pid,
      async stop() {
        stopping = true;
        const all = [...children.values()];
        for (const c of all) c.proc.kill("SIGTERM");
        await Promise.all(
          all.map((c) => Promise.race([c.proc.exited, Bun.sleep(10_000).then(() => c.proc.kill("SIGKILL"))])),
        );
        await (embedded ? embedded.stop() : database.close());
      },
    };
  } catch (e) {
    stopping = true;
    for (const c of children.values()) c.proc.kill("SIGKILL");
    await database.close();
    throw e;
  }
}

/** The child key of Sampler `i` (0-based): "sampler", "sampler-2", ... */
function samplerKey(i: number): string {
  return i === 0 ? "sampler" : `sampler-${i + 1}`;
}
