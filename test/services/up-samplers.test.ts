// `ddpo up --samplers 2` (startCluster): two Sampler processes, which the Trainer takes as one
// ipv4: fleet; a run on the Trainer's default Samplers draws on both, and a Sampler killed with
// SIGKILL comes back on its address, so the fleet's target stays valid.
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, localSamplerTarget, startCluster } from "../../services/cli/cluster.ts";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { BASE_MODEL_DIR, TINY_RUN_CONFIG, waitFor } from "./cluster.ts";

const dataDir = mkdtempSync(join(tmpdir(), "ddpo-up-samplers-"));
let cluster: Cluster | null = null;

afterAll(async () => {
  await cluster?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test("the Trainer's target for local Samplers", () => {
  expect(localSamplerTarget(["127.0.0.1:5001"])).toBe("127.0.0.1:5001");
  expect(localSamplerTarget(["127.0.0.1:5001", "127.0.0.1:5002"])).toBe("ipv4:127.0.0.1:5001,127.0.0.1:5002");
  // A host name cannot go in an ipv4: list: the Samplers as a list of single ones.
  expect(localSamplerTarget(["localhost:5001", "localhost:5002"])).toBe("localhost:5001,localhost:5002");
});

test("startCluster with samplers: 0 is refused", async () => {
  await expect(startCluster({ dataDir, samplers: 0 })).rejects.toThrow(/samplers must be an integer from 1/);
});

test("up with two Samplers: a run draws on both; a killed Sampler returns on its address", async () => {
  // Postgres, running unprivileged when we are root, must be able to enter the folder.
  await chmod(dataDir, 0o755);
  const log: string[] = [];
  cluster = await startCluster({ dataDir, samplers: 2, log: (line) => log.push(line) });
  const a = cluster.addresses;
  expect(a.samplers).toHaveLength(2);
  expect(a.sampler).toBe(a.samplers[0]!);
  expect(a.samplerTarget).toBe(`ipv4:${a.samplers.join(",")}`);
  expect(JSON.parse(readFileSync(join(dataDir, "services.json"), "utf8")).samplerTarget).toBe(a.samplerTarget);

  const trainer = createClient(Trainer, a.trainer);
  const streamed = async () =>
    Promise.all(
      a.samplers.map(async (address) => {
        const c = createClient(Sampler, address);
        try {
          return Number((await c.getStatus({}, { timeoutMs: 5000 })).samplesStreamed);
        } finally {
          c.close();
        }
      }),
    );
  try {
    const epochs = 2;
    const config = { ...TINY_RUN_CONFIG, sampleBatchesPerEpoch: 3 };
    const { run, workSplit } = await trainer.startRun(
      { name: "two local Samplers", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config },
      { timeoutMs: 60_000 },
    );
    expect(workSplit).toBe(`3 chunks of 2 samples per epoch, spread by round_robin over ${a.samplerTarget}`);
    let last = RunStatus.UNSPECIFIED;
    for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 120_000 })) {
      if (e.event.case === "status") last = e.event.value.status;
    }
    expect(last).toBe(RunStatus.COMPLETED);
    const drawn = await streamed();
    console.log(`samples drawn by the two Samplers: ${drawn.join(", ")}`);
    expect(drawn.reduce((x, y) => x + y, 0)).toBe(epochs * 6);
    expect(drawn.every((n) => n > 0)).toBe(true);

    const second = cluster.pid("sampler", 1)!;
    expect(second).not.toBe(cluster.pid("sampler", 0));
    process.kill(second, "SIGKILL");
    await waitFor("the second Sampler back", async () => {
      const now = cluster!.pid("sampler", 1);
      return now && now !== second ? true : undefined;
    });
    // Back on the same address: the fleet's target needs no change (a fresh process: nothing drawn).
    const again = await waitFor(
      "the second Sampler answering",
      async () => (await streamed().catch(() => null)) ?? undefined,
    );
    expect(again[1]).toBe(0);
    expect(log.some((l) => l.includes("sampler-2 exited"))).toBe(true);
  } finally {
    trainer.close();
  }
}, 300_000);
