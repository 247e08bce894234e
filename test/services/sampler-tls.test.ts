// The Trainer calls its Samplers over TLS with the shared token, across real processes over
// loopback with a real Postgres: two Samplers serve TLS with a certificate made at test time and
// need the token; the Trainer trusts that certificate (--sampler-tls-ca) under the name in it
// (--sampler-tls-server-name) and runs on an ipv4: fleet of the two. A plaintext Sampler is
// refused at StartRun. A Trainer given the CA alone cannot check an IP address: such a target is
// refused at StartRun, and a run recorded with one fails at the Trainer's start-up, not the Trainer.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { Code, createClient, type ServiceClient, ServiceError } from "../../services/lib/grpc/index.ts";
import { startTestPostgres, type TestDatabase, type TestPostgres } from "../db/postgres.ts";
import { hasOpenssl, makeSelfSignedCert } from "../grpc/self-signed.ts";
import { BASE_MODEL_DIR, type ServiceProcess, spawnService, spawnTrainer, TINY_RUN_CONFIG } from "./cluster.ts";

const TOKEN = "fleet-s3cret";
let pg: TestPostgres;
let database: TestDatabase;
let env: Record<string, string>;
let services: { registry: string; rewarder: string };
let dir: string;
let certs: ReturnType<typeof makeSelfSignedCert>;
const procs: ServiceProcess[] = [];
let samplers: ServiceProcess[];
let plaintextSampler: ServiceProcess;
let trainer: ServiceClient<typeof Trainer.method>;

beforeAll(async () => {
  if (!hasOpenssl) return;
  pg = await startTestPostgres();
  database = await pg.freshDatabase();
  dir = mkdtempSync(join(tmpdir(), "ddpo-sampler-tls-"));
  certs = makeSelfSignedCert(dir);
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, TOKEN);
  const tls = ["--tls-cert", certs.certFile, "--tls-key", certs.keyFile, "--token-file", tokenFile];
  env = { DATABASE_URL: database.url, DDPO_TOKEN: TOKEN };
  const started = await Promise.all([
    spawnService("sampler", tls),
    spawnService("sampler", tls),
    spawnService("sampler", [], { DDPO_TOKEN: TOKEN }),
    spawnService("rewarder", [], env),
    spawnService("registry", ["--data-dir", dir], env),
  ]);
  procs.push(...started);
  const [s0, s1, plain, rewarder, registry] = started;
  samplers = [s0!, s1!];
  plaintextSampler = plain!;
  services = { registry: registry!.address, rewarder: rewarder!.address };
  const t = await spawnTrainer(services, dir, env, [
    ...["--sampler-tls-ca", certs.certFile, "--sampler-tls-server-name", "localhost"],
    ...["--retry-for-s", "5"],
  ]);
  procs.push(t);
  trainer = createClient(Trainer, t.address, { token: TOKEN });
}, 120_000);

afterAll(async () => {
  trainer?.close();
  for (const p of procs) p.proc.kill("SIGKILL");
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const startRun = (name: string, samplerEndpoints: string[], client = trainer) =>
  client.startRun(
    { name, baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs: 1, config: TINY_RUN_CONFIG, samplerEndpoints },
    { timeoutMs: 60_000 },
  );

test.skipIf(!hasOpenssl)(
  "a run samples on two TLS Samplers with the token; a plaintext Sampler is refused",
  async () => {
    const target = `ipv4:${samplers.map((s) => s.address).join(",")}`;
    const { run } = await startRun("over TLS", [target]);
    let last = RunStatus.UNSPECIFIED;
    for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 120_000 })) {
      if (e.event.case === "status") last = e.event.value.status;
    }
    expect(last).toBe(RunStatus.COMPLETED);
    // The test asks the Samplers too, over TLS with the token, what they drew: all 4 samples.
    let drawn = 0;
    for (const s of samplers) {
      const port = s.address.split(":").at(-1);
      const c = createClient(Sampler, `localhost:${port}`, { tls: { ca: certs.cert }, token: TOKEN });
      try {
        drawn += Number((await c.getStatus({}, { timeoutMs: 5000 })).samplesStreamed);
        // Without the token a TLS Sampler answers nothing.
        const anonymous = createClient(Sampler, `localhost:${port}`, { tls: { ca: certs.cert } });
        const refused = await anonymous.getStatus({}, { timeoutMs: 5000 }).catch((e) => e);
        anonymous.close();
        expect(refused).toBeInstanceOf(ServiceError);
        expect((refused as ServiceError).code).toBe(Code.UNAUTHENTICATED);
      } finally {
        c.close();
      }
    }
    expect(drawn).toBe(4);

    // A Sampler serving plaintext does not answer a TLS handshake.
    const plain = await startRun("plaintext Sampler", [plaintextSampler.address]).catch((e) => e);
    expect(plain).toBeInstanceOf(ServiceError);
    expect((plain as ServiceError).code).toBe(Code.UNAVAILABLE);
    expect((plain as ServiceError).message).toContain(plaintextSampler.address);
  },
  180_000,
);

test.skipIf(!hasOpenssl)(
  "a Trainer with the CA alone: IP targets refused at StartRun, a recorded one fails its run at start-up",
  async () => {
    // The run above, marked running again, as if its Trainer had stopped mid-run.
    const { rows } = await database.pool.query("update runs set status = 'running' returning id");
    expect(rows).toHaveLength(1);
    const t = await spawnTrainer(services, dir, env, ["--sampler-tls-ca", certs.certFile]);
    procs.push(t);
    const client = createClient(Trainer, t.address, { token: TOKEN });
    try {
      // Resumed at start-up: the run fails with the reason; the Trainer keeps serving.
      let last = { status: RunStatus.UNSPECIFIED, message: "" };
      for await (const e of client.watchRun({ runId: rows[0].id }, { timeoutMs: 60_000 })) {
        if (e.event.case === "status") last = { status: e.event.value.status, message: e.event.value.message };
      }
      expect(last.status).toBe(RunStatus.FAILED);
      expect(last.message).toContain("tls.serverName");

      const byIp = await startRun("by IP", [samplers[0]!.address], client).catch((e) => e);
      expect(byIp).toBeInstanceOf(ServiceError);
      expect((byIp as ServiceError).code).toBe(Code.INVALID_ARGUMENT);
      expect((byIp as ServiceError).message).toContain("host name");
      // By the name in the certificate it works.
      const { run } = await startRun("by name", [`localhost:${samplers[0]!.address.split(":").at(-1)}`], client);
      let status = RunStatus.UNSPECIFIED;
      for await (const e of client.watchRun({ runId: run!.id }, { timeoutMs: 120_000 })) {
        if (e.event.case === "status") status = e.event.value.status;
      }
      expect(status).toBe(RunStatus.COMPLETED);
    } finally {
      client.close();
    }
  },
  180_000,
);
