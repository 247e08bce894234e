// `ddpo dashboard [--address 127.0.0.1:8470] [--data-dir .ddpo] [--sampler ADDR --rewarder ADDR] [--trainer ADDR]
// [--token-file F] [--tls-cert F --tls-key F]` and `bun run services/dashboard/main.ts` (what `ddpo up`
// spawns): the dashboard over the database that DATABASE_URL names, else the one a running `ddpo up`
// wrote to <data-dir>/services.json, else the embedded server in <data-dir>/postgres (started here).
// The Sampler and Rewarder (flags, else services.json) draw a seed under each checkpoint on request;
// the Trainer's WatchRun feeds live pages the progress inside an epoch.
// Prints one JSON line once listening.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { commandFlags, type FlagSpec } from "../cli/flags.ts";
import { openDatabase, type ProductDatabase, startDatabase } from "../lib/db/database.ts";
import { startDashboard } from "./server.ts";

export const DASHBOARD_USAGE = `  dashboard [--address 127.0.0.1:8470] [--data-dir .ddpo] [--poll-ms 1000] [--sampler ADDR --rewarder ADDR]
           [--trainer ADDR]   web pages over the runs in Postgres`;

const DEFAULT_ADDRESS = "127.0.0.1:8470";

/** Declared once: parsed here and listed by `ddpo dashboard --help`. */
const DASHBOARD_FLAGS = {
  address: { type: "string", value: "HOST:PORT", help: "where to listen", default: DEFAULT_ADDRESS },
  "data-dir": {
    type: "string",
    value: "DIR",
    help: "where `ddpo up` keeps services.json and Postgres",
    default: ".ddpo",
  },
  "poll-ms": { type: "string", value: "MS", help: "how often live pages poll the database (>= 50)", default: 1000 },
  sampler: {
    type: "string",
    value: "ADDR",
    help: "Sampler that redraws a seed under each checkpoint",
    default: "from services.json",
  },
  rewarder: {
    type: "string",
    value: "ADDR",
    help: "Rewarder that scores those redraws",
    default: "from services.json",
  },
  trainer: {
    type: "string",
    value: "ADDR",
    help: "Trainer whose WatchRun feeds live pages",
    default: "from services.json",
  },
  "token-file": { type: "string", value: "FILE", help: "the services' token (else DDPO_TOKEN; never a flag)" },
  "tls-cert": { type: "string", value: "FILE", help: "TLS certificate (with --tls-key)" },
  "tls-key": { type: "string", value: "FILE", help: "TLS private key (with --tls-cert)" },
} satisfies Record<string, FlagSpec>;

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
  const parsed = commandFlags(`ddpo ${DASHBOARD_USAGE.trim()}`, argv, DASHBOARD_FLAGS);
  if (!parsed) return;
  const v = parsed.values;
  const dataDir = v["data-dir"] ?? ".ddpo";
  const sampler = v.sampler ?? servicesFile(dataDir).sampler;
  const rewarder = v.rewarder ?? servicesFile(dataDir).rewarder;
  const trainer = v.trainer ?? servicesFile(dataDir).trainer;
  const address = v.address ?? defaultAddress;
  const pollMs = v["poll-ms"] === undefined ? undefined : Number(v["poll-ms"]);
  if (pollMs !== undefined && !(pollMs >= 50))
    throw new Error(`--poll-ms must be a number >= 50, got '${v["poll-ms"]}'`);
  const tlsCert = v["tls-cert"];
  const tlsKey = v["tls-key"];
  if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new Error("--tls-cert and --tls-key go together");
  // The token comes from a file or the environment, never argv (visible in `ps`).
  const token = v["token-file"] ? readFileSync(v["token-file"], "utf8").trim() : process.env.DDPO_TOKEN || undefined;
  const database = await openProductDatabase(dataDir);
  const dashboard = await startDashboard({
    db: database.db,
    address,
    token,
    pollMs,
    previews: sampler && rewarder ? { sampler, rewarder, clientOptions: { token } } : undefined,
    trainer: trainer ? { address: trainer, clientOptions: { token } } : undefined,
    tls: tlsCert && tlsKey ? { cert: readFileSync(tlsCert), key: readFileSync(tlsKey) } : undefined,
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
