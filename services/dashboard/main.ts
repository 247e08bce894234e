// `ddpo dashboard [--address 127.0.0.1:8470] [--data-dir .ddpo] [--sampler ADDR --rewarder ADDR] [--trainer ADDR]
// [--token-file F] [--tls-cert F --tls-key F]` and `bun run services/dashboard/main.ts` (what `ddpo up`
// spawns): the dashboard over the database that DATABASE_URL names, else the one a running `ddpo up`
// wrote to <data-dir>/services.json, else the embedded server in <data-dir>/postgres (started here).
// The Sampler and Rewarder (flags, else services.json) draw a seed under each checkpoint on request;
// the Trainer's WatchRun feeds live pages the progress inside an epoch.
// Prints one JSON line once listening.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { openDatabase, type ProductDatabase, startDatabase } from "../lib/db/database.ts";
import { parseServiceFlags } from "../lib/grpc/service-process.ts";
import { startDashboard } from "./server.ts";

export const DASHBOARD_USAGE = `  dashboard [--address 127.0.0.1:8470] [--data-dir .ddpo] [--poll-ms 1000] [--sampler ADDR --rewarder ADDR]
           [--trainer ADDR]   web pages over the runs in Postgres`;

const DEFAULT_ADDRESS = "127.0.0.1:8470";

interface ServicesFile {
  databaseUrl?: string;
  sampler?: string;
  rewarder?: string;
  trainer?: string;
}

/** What a running `ddpo up` wrote, or nothing. */
function servicesFile(dataDir: string): ServicesFile {
  const file = join(dataDir, "services.json");
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as ServicesFile) : {};
}

async function openProductDatabase(dataDir: string): Promise<Pick<ProductDatabase, "db" | "close">> {
  const url = process.env.DATABASE_URL || servicesFile(dataDir).databaseUrl;
  if (url) return openDatabase({ url, connectionTimeoutMs: 2_000 });
  return startDatabase({ dataDir: join(dataDir, "postgres") });
}

export async function dashboardCommand(argv: string[], defaultAddress = DEFAULT_ADDRESS): Promise<void> {
  const flags = parseServiceFlags(argv, ["data-dir", "poll-ms", "sampler", "rewarder", "trainer"]);
  const dataDir = flags.extra["data-dir"] ?? ".ddpo";
  const sampler = flags.extra.sampler ?? servicesFile(dataDir).sampler;
  const rewarder = flags.extra.rewarder ?? servicesFile(dataDir).rewarder;
  const trainer = flags.extra.trainer ?? servicesFile(dataDir).trainer;
  const address =
    argv.includes("--address") || argv.some((a) => a.startsWith("--address=")) ? flags.address : defaultAddress;
  const pollMs = flags.extra["poll-ms"] === undefined ? undefined : Number(flags.extra["poll-ms"]);
  if (pollMs !== undefined && !(pollMs >= 50))
    throw new Error(`--poll-ms must be a number >= 50, got '${flags.extra["poll-ms"]}'`);
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw new Error("--tls-cert and --tls-key go together");
  const database = await openProductDatabase(dataDir);
  const dashboard = await startDashboard({
    db: database.db,
    address,
    token: flags.token,
    pollMs,
    previews: sampler && rewarder ? { sampler, rewarder, clientOptions: { token: flags.token } } : undefined,
    trainer: trainer ? { address: trainer, clientOptions: { token: flags.token } } : undefined,
    tls:
      flags.tlsCert && flags.tlsKey
        ? { cert: readFileSync(flags.tlsCert), key: readFileSync(flags.tlsKey) }
        : undefined,
  });
  const stop = async () => {
    await dashboard.stop();
    await database.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  console.log(
    JSON.stringify({ service: "dashboard", address: dashboard.address, url: dashboard.url, pid: process.pid }),
  );
}

if (import.meta.main) {
  try {
    // Spawned by `ddpo up` with --address HOST:0; run by hand, the fixed default port.
    await dashboardCommand(process.argv.slice(2));
  } catch (err) {
    console.error(`dashboard: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
