// What the service benches share: a cluster in a temporary folder that goes away afterwards (also
// on Ctrl-C), and the report printed as aligned `key value` lines plus, with --json, one JSON line.
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, type ClusterOptions, startCluster } from "../services/cli/cluster.ts";

/**
 * Starts Postgres and the services (`options`) in a fresh temporary folder, runs `body`, then
 * stops them and removes the folder, also when the process is interrupted.
 */
export async function withTemporaryCluster<T>(
  suite: string,
  options: Omit<ClusterOptions, "dataDir">,
  body: (cluster: Cluster, tmp: string) => Promise<T>,
): Promise<T> {
  const tmp = mkdtempSync(join(tmpdir(), `ddpo-bench-${suite}-`));
  // mkdtemp gives 0700; postgres, unprivileged when we are root, must be able to enter.
  chmodSync(tmp, 0o755);
  let cluster: Cluster | null = null;
  let cleaned: Promise<void> | null = null;
  const cleanup = () => {
    cleaned ??= (async () => {
      await cluster?.stop().catch((e) => console.error(`bench ${suite}: stopping the cluster: ${e}`));
      rmSync(tmp, { recursive: true, force: true });
    })();
    return cleaned;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    cleanup().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    console.error(`[${suite}] starting Postgres and the services in ${tmp} ...`);
    cluster = await startCluster({ ...options, dataDir: join(tmp, "data") });
    return await body(cluster, tmp);
  } finally {
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Prints `result` as aligned lines (numbers to 3 decimals, lists comma-separated) and, with json, as JSON. */
export function printReport(result: Record<string, unknown>, json: boolean): void {
  const show = (v: unknown): string => {
    if (Array.isArray(v)) return v.map(show).join(", ");
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
    return String(v);
  };
  const width = Math.max(...Object.keys(result).map((k) => k.length)) + 1;
  for (const [k, v] of Object.entries(result)) console.log(`${k.padEnd(width)} ${show(v)}`);
  if (json) console.log(JSON.stringify(result));
}
