// The Trainer process: `bun run services/trainer/main.ts --registry ADDR --rewarder ADDR
// --samplers ADDR[,ADDR] [--data-dir DIR] [--retry-for-s 120] [--address 127.0.0.1:0]
// [--sampler-tls-ca F] [--sampler-tls-server-name NAME]`, against DATABASE_URL. --retry-for-s: how
// long a run keeps retrying unreachable services before it fails. --sampler-tls-*: call the
// Samplers over TLS, trusting the CA certificate(s) in F (default: the system's roots), checking
// their certificates against NAME (default: each target's host; required for IP addresses and
// ipv4: fleets). The token (DDPO_TOKEN / --token-file) goes with every call.
// At start it resumes the runs a previous Trainer left running (from their last checkpoints).
import { readFileSync } from "node:fs";
import { migrate, openDatabase, watchDatabase } from "../lib/db/database.ts";
import { TrajectoryRecorder } from "../lib/db/recorder.ts";
import { balancedTarget, type ClientTls } from "../lib/grpc/index.ts";
import { parseServiceFlags, runServiceProcess } from "../lib/grpc/service-process.ts";
import { trainerService } from "./trainer-service.ts";

const flags = parseServiceFlags(process.argv.slice(2), [
  "registry",
  "rewarder",
  "samplers",
  "data-dir",
  "retry-for-s",
  "sampler-tls-ca",
  "sampler-tls-server-name",
]);
const url = process.env.DATABASE_URL;
if (!url) {
  console.error("trainer: DATABASE_URL is not set (ddpo up sets it for the embedded server)");
  process.exit(2);
}
const { registry, rewarder, samplers } = flags.extra;
if (!registry || !rewarder) {
  console.error("trainer: --registry and --rewarder addresses are required");
  process.exit(2);
}
const retryForS = Number(flags.extra["retry-for-s"] ?? 120);
if (!(retryForS > 0 && retryForS <= 86_400)) {
  console.error(`trainer: --retry-for-s must be seconds in (0, 86400], not '${flags.extra["retry-for-s"]}'`);
  process.exit(2);
}
const samplerCa = flags.extra["sampler-tls-ca"];
const samplerServerName = flags.extra["sampler-tls-server-name"];
let samplerTls: ClientTls | undefined;
if (samplerCa || samplerServerName) {
  samplerTls = samplerServerName ? { serverName: samplerServerName } : {};
  try {
    if (samplerCa) samplerTls.ca = readFileSync(samplerCa);
  } catch (e) {
    console.error(`trainer: --sampler-tls-ca: ${(e as Error).message}`);
    process.exit(2);
  }
}
const database = openDatabase({ url });
await migrate(database.db);
const recorder = new TrajectoryRecorder(database.db);
const trainer = trainerService({
  db: database.db,
  recorder,
  registryAddress: registry,
  defaultRewarderAddress: rewarder,
  // A list of host:port, or one fleet target (ipv4:a,b / dns:///name:port) kept whole.
  defaultSamplers: !samplers ? [] : balancedTarget(samplers) ? [samplers] : samplers.split(",").filter(Boolean),
  dataDir: flags.extra["data-dir"] ?? ".ddpo",
  clientOptions: { token: flags.token },
  samplerTls,
  retryForMs: retryForS * 1000,
});
let unwatch = () => {};
const server = await runServiceProcess("trainer", flags, [trainer.service], async () => {
  unwatch();
  await trainer.close();
  await recorder.close();
  await database.close();
});
// Health follows the database: runs cannot start or record without it (the recorder buffers).
unwatch = watchDatabase(database.db, (reachable) => {
  for (const name of ["", "ddpo.v1.Trainer"]) server.setServingStatus(name, reachable ? "SERVING" : "NOT_SERVING");
});
const resumed = await trainer.resumeInterrupted();
if (resumed.length) console.error(`trainer: resumed ${resumed.length} interrupted run(s): ${resumed.join(", ")}`);
