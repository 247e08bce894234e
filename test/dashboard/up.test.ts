// `ddpo up` (startCluster) starts the dashboard beside the four services: its address is in
// services.json, it serves the runs page from the cluster's database, and it stops with the rest.
import { afterAll, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type Cluster, startCluster } from "../../services/cli/cluster.ts";
import { tempDataDir } from "../db/postgres.ts";

let cluster: Cluster | undefined;
let dataDir: string;
afterAll(async () => {
  await cluster?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("ddpo up serves the dashboard on loopback and writes its address to services.json", async () => {
  dataDir = await tempDataDir();
  cluster = await startCluster({ dataDir, log: () => undefined });
  const { dashboard } = cluster.addresses;
  expect(dashboard).toMatch(/^127\.0\.0\.1:\d+$/);
  expect(JSON.parse(readFileSync(join(dataDir, "services.json"), "utf8")).dashboard).toBe(dashboard);
  const page = await fetch(`http://${dashboard}/`);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain("No runs recorded yet");
  await cluster.stop();
  cluster = undefined;
  await expect(fetch(`http://${dashboard}/health`)).rejects.toThrow();
}, 120_000);
