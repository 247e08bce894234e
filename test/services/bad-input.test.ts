// Bad input to every RPC of the four real service processes (Sampler, Rewarder, Registry, Trainer
// over loopback, Registry and Trainer on a real Postgres): missing fields, wrong shapes, NaN and
// infinite numbers, oversized and malformed messages, unknown ids and names. Each answers with the
// exact status code and a message naming the field; afterwards every process is still up, reports
// SERVING on grpc.health.v1 and answers a valid call.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Client, credentials, type ServiceError as GrpcError, Metadata } from "@grpc/grpc-js";
import { CheckpointKind, RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Rewarder } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import { DdpoLoss } from "../../services/gen/ddpo/v1/run_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { readSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import {
  Code,
  createClient,
  DEFAULT_MAX_MESSAGE_BYTES,
  type ServiceClient,
  ServiceError,
} from "../../services/lib/grpc/index.ts";
import { startTestPostgres, type TestPostgres } from "../db/postgres.ts";
import { healthCheck } from "../grpc/health.ts";
import { BASE_MODEL_DIR, type ServiceProcess, spawnService, spawnTrainer } from "./cluster.ts";

const SHA = "ab".repeat(32);
// One epoch of 2 samples x 2 DDIM steps: the valid run at the end finishes in seconds.
const TINY_CONFIG = {
  seed: 3,
  loss: DdpoLoss.IS,
  sampleBatchSize: 2,
  sampleBatchesPerEpoch: 1,
  steps: 2,
  guidance: 1,
  trainBatchSize: 2,
  gradientAccumulation: 1,
  lr: 1e-4,
  finetune: { case: "lora" as const, value: { rank: 2, alpha: 2 } },
  advantages: { case: "batchStatistics" as const, value: {} },
};

let pg: TestPostgres;
let scratch: string;
let truncatedModel: string;
/** The one-epoch run that completes at the end of the bad-input tests. */
let validRunId: string;
const procs: Record<"sampler" | "rewarder" | "registry" | "trainer", ServiceProcess> = {} as never;
let sampler: ServiceClient<(typeof Sampler)["method"]>;
let rewarder: ServiceClient<(typeof Rewarder)["method"]>;
let registry: ServiceClient<(typeof Registry)["method"]>;
let trainer: ServiceClient<(typeof Trainer)["method"]>;
/** Clients whose own send limit is above the servers' 64 MiB, so the server is the one to refuse. */
const bigClients: { close(): void }[] = [];

beforeAll(async () => {
  pg = await startTestPostgres();
  const database = await pg.freshDatabase();
  scratch = mkdtempSync(join(tmpdir(), "ddpo-bad-input-"));
  // A model folder whose UNet weights stop half-way.
  truncatedModel = join(scratch, "truncated-model");
  cpSync(BASE_MODEL_DIR, truncatedModel, { recursive: true });
  const weights = join(truncatedModel, "unet", "diffusion_pytorch_model.safetensors");
  truncateSync(weights, Math.floor(Bun.file(weights).size / 2));

  const env = { DATABASE_URL: database.url };
  const [s, rw, rg] = await Promise.all([
    spawnService("sampler", []),
    spawnService("rewarder", []),
    spawnService("registry", ["--data-dir", join(scratch, "data")], env),
  ]);
  Object.assign(procs, { sampler: s, rewarder: rw, registry: rg });
  procs.trainer = await spawnTrainer(
    { registry: rg.address, rewarder: rw.address, samplers: s.address },
    join(scratch, "data"),
    env,
  );
  sampler = createClient(Sampler, s.address);
  rewarder = createClient(Rewarder, rw.address);
  registry = createClient(Registry, rg.address);
  trainer = createClient(Trainer, procs.trainer.address);
}, 60_000);

afterAll(async () => {
  for (const c of [sampler, rewarder, registry, trainer, ...bigClients]) c?.close();
  for (const p of Object.values(procs)) p.proc.kill("SIGKILL");
  await Promise.all(Object.values(procs).map((p) => p.proc.exited));
  await pg?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** The ServiceError a unary call or a whole stream fails with. */
async function failure(call: Promise<unknown> | AsyncIterable<unknown>): Promise<ServiceError> {
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call);
    else await call;
  } catch (error) {
    expect(error).toBeInstanceOf(ServiceError);
    return error as ServiceError;
  }
  throw new Error("expected the call to fail");
}

async function expectStatus(
  call: Promise<unknown> | AsyncIterable<unknown>,
  code: Code,
  message: RegExp | string,
): Promise<void> {
  const error = await failure(call);
  expect(`${Code[error.code]}: ${error.message}`).toMatch(
    typeof message === "string"
      ? `${Code[code]}: ${message}`
      : // A pattern anchored with ^ must match from the start of the message.
        new RegExp(
          `^${Code[code]}: ${message.source.startsWith("^") ? message.source.slice(1) : `.*${message.source}`}`,
        ),
  );
}

/** Raw bytes to a method through a plain grpc-js client: the status it answers with. */
function rawCall(address: string, path: string, bytes: Buffer): Promise<GrpcError> {
  const raw = new Client(address, credentials.createInsecure());
  return new Promise<GrpcError>((resolve, reject) => {
    const onError = (err: GrpcError | null) => (err ? resolve(err) : reject(new Error(`${path} accepted the bytes`)));
    const call = raw.makeServerStreamRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      new Metadata(),
      {},
    );
    call.on("data", () => undefined);
    call.on("error", onError);
    call.on("end", () => onError(null));
  }).finally(() => raw.close());
}

/** Unary raw call (makeUnaryRequest), for unary methods. */
function rawUnary(address: string, path: string, bytes: Buffer): Promise<GrpcError> {
  const raw = new Client(address, credentials.createInsecure());
  return new Promise<GrpcError>((resolve, reject) =>
    raw.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      new Metadata(),
      {},
      (err) => (err ? resolve(err) : reject(new Error(`${path} accepted the bytes`))),
    ),
  ).finally(() => raw.close());
}

// Field 1, length-delimited, claims 5 bytes and carries 1: no protobuf parser accepts it.
const MALFORMED = Buffer.from([0x0a, 0x05, 0x61]);

async function expectMalformed(address: string, method: string, input: string, streaming = false) {
  const path = `/ddpo.v1.${method}`;
  const error = await (streaming ? rawCall : rawUnary)(address, path, MALFORMED);
  expect(error.code).toBe(Code.INVALID_ARGUMENT);
  expect(error.details).toContain(`malformed ddpo.v1.${input}`);
}

/** A client that sends up to 128 MiB, so a 65 MiB request reaches the server's 64 MiB limit. */
function bigClient<S extends GenServiceMethods>(service: GenService<S>, address: string) {
  const client = createClient(service, address, { maxMessageBytes: 2 * DEFAULT_MAX_MESSAGE_BYTES });
  bigClients.push(client);
  return client;
}
const OVERSIZED = DEFAULT_MAX_MESSAGE_BYTES + (1 << 20);

const image = (width: number, height: number, bytes = width * height * 3) => ({
  width,
  height,
  rgb: new Uint8Array(bytes).fill(128),
});

describe("Sampler", () => {
  const ok = { prompts: ["a cat"], seeds: [1n], steps: 2, guidance: 1 };

  test("Sample before any LoadCheckpoint is FAILED_PRECONDITION", async () => {
    await expectStatus(sampler.sample(ok), Code.FAILED_PRECONDITION, "no checkpoint loaded; call LoadCheckpoint first");
  });

  test("LoadCheckpoint: missing fields, both deltas, a missing folder", async () => {
    await expectStatus(sampler.loadCheckpoint({}), Code.INVALID_ARGUMENT, "checkpoint_id is required");
    await expectStatus(
      sampler.loadCheckpoint({ checkpointId: "c" }),
      Code.INVALID_ARGUMENT,
      "base_model_dir is required",
    );
    await expectStatus(
      sampler.loadCheckpoint({ checkpointId: "c", baseModelDir: BASE_MODEL_DIR, loraDir: "/a", fullModelDir: "/b" }),
      Code.INVALID_ARGUMENT,
      "give lora_dir or full_model_dir, not both",
    );
    const missing = join(scratch, "no-such-model");
    await expectStatus(
      sampler.loadCheckpoint({ checkpointId: "c", baseModelDir: missing }),
      Code.NOT_FOUND,
      `checkpoint c: checkpoint folder ${missing} does not exist`,
    );
    await expectStatus(
      sampler.loadCheckpoint({ checkpointId: "c", baseModelDir: BASE_MODEL_DIR, loraDir: missing }),
      Code.NOT_FOUND,
      `checkpoint c: checkpoint folder ${missing} does not exist`,
    );
  });

  test("a truncated safetensors file is refused and the loaded checkpoint still samples", async () => {
    await sampler.loadCheckpoint({ checkpointId: "good", baseModelDir: BASE_MODEL_DIR }, { timeoutMs: 30_000 });
    const error = await failure(
      sampler.loadCheckpoint({ checkpointId: "truncated", baseModelDir: truncatedModel }, { timeoutMs: 30_000 }),
    );
    expect(error.code).toBe(Code.INVALID_ARGUMENT);
    expect(error.message).toMatch(/^checkpoint truncated: .*diffusion_pytorch_model\.safetensors/);
    expect((await sampler.getStatus({})).checkpointId).toBe("good");
    const out = [];
    for await (const t of sampler.sample({ ...ok, checkpointId: "good" }, { timeoutMs: 30_000 })) out.push(t);
    expect(out.map((t) => [t.index, t.checkpointId, t.logProbs.length])).toEqual([[0, "good", 2]]);
  });

  test("Sample: wrong shapes and numbers out of range are INVALID_ARGUMENT", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ prompts: [], seeds: [] }, "prompts is empty"],
      [{ prompts: ["a", "b"], seeds: [1n] }, "1 seeds for 2 prompts (one seed per prompt)"],
      [{ prompts: ["a"], seeds: [] }, "0 seeds for 1 prompts (one seed per prompt)"],
      [{ prompts: ["a".repeat(1001)], seeds: [1n] }, "prompts[0] is longer than 1000 characters"],
      [{ ...ok, seeds: [2n ** 60n] }, `seeds[0] = ${2n ** 60n} is not below 2^52`],
      [{ ...ok, steps: 0 }, "steps must be an integer in 1..1000, got 0"],
      [{ ...ok, steps: 5000 }, "steps must be an integer in 1..1000, got 5000"],
      [{ ...ok, guidance: Number.NaN }, "guidance must be a finite number >= 1, got NaN"],
      [{ ...ok, guidance: Number.POSITIVE_INFINITY }, "guidance must be a finite number >= 1, got Infinity"],
      [{ ...ok, guidance: 0.5 }, "guidance must be a finite number >= 1, got 0.5"],
      [{ ...ok, eta: 0 }, "eta must be a finite number > 0 (the policy needs a log-prob), got 0"],
      [{ ...ok, eta: Number.NaN }, "eta must be a finite number > 0 (the policy needs a log-prob), got NaN"],
      [{ ...ok, batchSize: 1000 }, "batch_size must be an integer in 1..256, got 1000"],
      [
        { prompts: Array(4097).fill("a"), seeds: Array(4097).fill(1n) },
        "the number of prompts must be an integer in 1..4096, got 4097",
      ],
    ];
    for (const [request, message] of cases) {
      await expectStatus(sampler.sample({ checkpointId: "good", ...request }), Code.INVALID_ARGUMENT, message);
    }
    await expectStatus(
      sampler.sample({ ...ok, checkpointId: "other" }),
      Code.FAILED_PRECONDITION,
      "checkpoint 'other' requested but good is loaded; name the loaded one or call LoadCheckpoint",
    );
    // The contract: checkpoint_id must name the loaded policy; empty is not a wildcard.
    await expectStatus(
      sampler.sample(ok),
      Code.FAILED_PRECONDITION,
      "checkpoint '' requested but good is loaded; name the loaded one or call LoadCheckpoint",
    );
  });

  test("oversized and malformed messages", async () => {
    const big = bigClient(Sampler, procs.sampler.address);
    const error = await failure(big.sample({ prompts: ["x".repeat(OVERSIZED)], seeds: [1n] }));
    expect(error.code).toBe(Code.RESOURCE_EXHAUSTED);
    await expectMalformed(procs.sampler.address, "Sampler/LoadCheckpoint", "LoadCheckpointRequest");
    await expectMalformed(procs.sampler.address, "Sampler/Sample", "SampleRequest", true);
    await expectMalformed(procs.sampler.address, "Sampler/GetStatus", "GetStatusRequest");
  });
});

describe("Rewarder", () => {
  test("Score: missing reward name, unknown reward", async () => {
    const images = [{ prompt: "a cat", image: image(8, 8) }];
    await expectStatus(rewarder.score({ images }), Code.INVALID_ARGUMENT, "reward_name is required");
    await expectStatus(
      rewarder.score({ rewardName: "no_such_reward", images }),
      Code.NOT_FOUND,
      /^unknown reward 'no_such_reward'/,
    );
  });

  test("Score: no images, missing images, wrong sizes and RGB lengths; mixed sizes score as alone", async () => {
    const score = (images: { prompt?: string; image?: ReturnType<typeof image> }[]) =>
      rewarder.score({ rewardName: "jpeg_compressibility", images });
    await expectStatus(score([]), Code.INVALID_ARGUMENT, "images is empty; score at least one image");
    await expectStatus(score([{ prompt: "a" }]), Code.INVALID_ARGUMENT, "images[0]: missing");
    await expectStatus(score([{ image: image(8, 8) }, { prompt: "b" }]), Code.INVALID_ARGUMENT, "images[1]: missing");
    await expectStatus(
      score([{ image: image(8, 8, 100) }]),
      Code.INVALID_ARGUMENT,
      "images[0]: 100 bytes of RGB, expected 8x8x3 = 192",
    );
    // Mixed sizes are allowed (the contract): each image scores as it does alone.
    const mixed = [{ image: image(8, 8) }, { image: { ...image(4, 6), rgb: new Uint8Array(72).map((_, i) => i * 3) } }];
    const together = await rewarder.score({ rewardName: "jpeg_compressibility", images: mixed });
    const alone = await Promise.all(
      mixed.map(async (m) => (await rewarder.score({ rewardName: "jpeg_compressibility", images: [m] })).scores[0]!),
    );
    expect(together.scores).toEqual(alone);
    await expectStatus(
      score([{ image: image(5000, 1, 0) }]),
      Code.INVALID_ARGUMENT,
      "images[0]: size 5000x1 outside 1..4096",
    );
  });

  test("oversized and malformed messages", async () => {
    const big = bigClient(Rewarder, procs.rewarder.address);
    const huge = { width: 4096, height: 2048, rgb: new Uint8Array(OVERSIZED) };
    const error = await failure(big.score({ rewardName: "jpeg_compressibility", images: [{ image: huge }] }));
    expect(error.code).toBe(Code.RESOURCE_EXHAUSTED);
    await expectMalformed(procs.rewarder.address, "Rewarder/Score", "ScoreRequest");
    await expectMalformed(procs.rewarder.address, "Rewarder/ListRewards", "ListRewardsRequest");
  });
});

describe("Registry", () => {
  const base = { id: "base-1", kind: CheckpointKind.BASE, location: BASE_MODEL_DIR };

  test("RegisterCheckpoint: missing fields, bad kind and hash, unknown parent, a conflicting id", async () => {
    const cases: [Record<string, unknown> | undefined, string][] = [
      [undefined, "checkpoint is required"],
      [{ ...base, id: "" }, "checkpoint.id is required"],
      [{ ...base, kind: CheckpointKind.UNSPECIFIED }, "checkpoint.kind must be BASE, FULL or LORA"],
      [{ ...base, sha256: "xyz" }, "checkpoint.sha256 must be 64 lower-case hex digits (or empty)"],
      [{ ...base, location: "" }, "checkpoint.location is required"],
      [{ ...base, id: "lora-1", kind: CheckpointKind.LORA }, "a lora checkpoint needs parent_id"],
      [{ ...base, sha256: SHA }, `checkpoint.sha256 ${SHA} does not match the files at ${BASE_MODEL_DIR}`],
      [{ ...base, sizeBytes: 1n }, `checkpoint.size_bytes 1 does not match the files at ${BASE_MODEL_DIR}`],
    ];
    for (const [checkpoint, message] of cases) {
      await expectStatus(registry.registerCheckpoint({ checkpoint }), Code.INVALID_ARGUMENT, message);
    }
    await expectStatus(
      registry.registerCheckpoint({
        checkpoint: { ...base, id: "lora-1", kind: CheckpointKind.LORA, parentId: "nope" },
      }),
      Code.NOT_FOUND,
      "parent checkpoint nope is not registered",
    );
    expect((await registry.registerCheckpoint({ checkpoint: base })).created).toBe(true);
    const other = join(scratch, "data", "runs", "other-base");
    cpSync(join(BASE_MODEL_DIR, "unet"), join(other, "unet"), { recursive: true });
    await expectStatus(
      registry.registerCheckpoint({ checkpoint: { ...base, location: other } }),
      Code.ALREADY_EXISTS,
      /base-1/,
    );
  });

  test("RegisterCheckpoint: locations outside the checkpoint roots are refused", async () => {
    const runs = join(scratch, "data", "runs");
    const outside = join(scratch, "outside");
    mkdirSync(outside, { recursive: true });
    writeFileSync(join(outside, "secret.txt"), "not for clients");
    // A folder inside the runs root that links to a file outside it, and a link to a folder outside.
    const leaky = join(runs, "leaky");
    mkdirSync(leaky, { recursive: true });
    writeFileSync(join(leaky, "ok.bin"), "fine");
    symlinkSync(join(outside, "secret.txt"), join(leaky, "secret.txt"));
    symlinkSync(outside, join(runs, "linked"));
    const cases: [string, Code, string][] = [
      ["models/emoji-base", Code.INVALID_ARGUMENT, "checkpoint.location must be an absolute path"],
      [`${runs}/../../..`, Code.INVALID_ARGUMENT, "checkpoint.location must not contain '..'"],
      [`${BASE_MODEL_DIR}/../emoji-base`, Code.INVALID_ARGUMENT, "checkpoint.location must not contain '..'"],
      ["/etc", Code.PERMISSION_DENIED, "checkpoint.location /etc is outside the checkpoint roots"],
      [outside, Code.PERMISSION_DENIED, `checkpoint.location ${outside} is outside the checkpoint roots`],
      [join(runs, "linked"), Code.PERMISSION_DENIED, `checkpoint.location ${join(runs, "linked")} is outside`],
      [leaky, Code.PERMISSION_DENIED, "checkpoint escape: secret.txt (a link) is outside the checkpoint roots"],
      [
        join(runs, "missing"),
        Code.NOT_FOUND,
        `checkpoint.location: the folder ${join(runs, "missing")} does not exist`,
      ],
      [join(leaky, "ok.bin"), Code.INVALID_ARGUMENT, `checkpoint.location: ${join(leaky, "ok.bin")} is not a folder`],
    ];
    for (const [location, code, message] of cases) {
      await expectStatus(
        registry.registerCheckpoint({ checkpoint: { ...base, id: "escape", location } }),
        code,
        new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
      );
    }
    await expectStatus(registry.getCheckpoint({ id: "escape" }), Code.NOT_FOUND, "checkpoint escape is not registered");
  });

  test("sha256 and size_bytes cover exactly what StreamCheckpoint streams; changed files are DATA_LOSS", async () => {
    const folder = join(scratch, "data", "runs", "streamed");
    cpSync(BASE_MODEL_DIR, folder, { recursive: true });
    const { checkpoint } = await registry.registerCheckpoint({
      checkpoint: { id: "streamed", kind: CheckpointKind.BASE, location: folder },
    });
    const files = new Map<string, Uint8Array[]>();
    for await (const chunk of registry.streamCheckpoint({ id: "streamed", chunkBytes: 1 << 16 })) {
      const parts = files.get(chunk.path) ?? [];
      parts.push(chunk.data);
      files.set(chunk.path, parts);
    }
    // The digest as the proto defines it, computed here from the streamed bytes.
    const hasher = new Bun.CryptoHasher("sha256");
    let total = 0;
    for (const path of [...files.keys()].sort()) {
      const data = Buffer.concat(files.get(path)!);
      hasher.update(`${path}\0${data.length}\0`);
      hasher.update(data);
      total += data.length;
      expect(data.equals(readFileSync(join(folder, path)))).toBe(true);
    }
    const onDisk = readdirSync(folder, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.size).toBe(onDisk.length);
    expect(checkpoint!.sha256).toBe(hasher.digest("hex"));
    expect(checkpoint!.sizeBytes).toBe(BigInt(total));
    // A file changed after registration: the stream ends with DATA_LOSS, not a silent mismatch.
    writeFileSync(join(folder, "README.md"), "changed");
    await expectStatus(
      registry.streamCheckpoint({ id: "streamed" }),
      Code.DATA_LOSS,
      /^checkpoint streamed: the files at .* changed since registration/,
    );
    // The folder replaced by a link to outside the roots after registration: refused when streamed.
    rmSync(folder, { recursive: true });
    symlinkSync("/etc", folder);
    await expectStatus(
      registry.streamCheckpoint({ id: "streamed" }),
      Code.PERMISSION_DENIED,
      `checkpoint streamed: its location ${folder} is outside the checkpoint roots`,
    );
  });

  test("GetCheckpoint, StreamCheckpoint, GetLineage: missing and unknown ids", async () => {
    await expectStatus(registry.getCheckpoint({}), Code.INVALID_ARGUMENT, "id is required");
    await expectStatus(registry.getCheckpoint({ id: "nope" }), Code.NOT_FOUND, "checkpoint nope is not registered");
    await expectStatus(registry.streamCheckpoint({}), Code.INVALID_ARGUMENT, "id is required");
    await expectStatus(registry.streamCheckpoint({ id: "nope" }), Code.NOT_FOUND, "checkpoint nope is not registered");
    await expectStatus(
      registry.streamCheckpoint({ id: "base-1", chunkBytes: 64 << 20 }),
      Code.INVALID_ARGUMENT,
      `chunk_bytes ${64 << 20} is above ${4 << 20}`,
    );
    const gone = join(scratch, "data", "runs", "gone");
    cpSync(join(BASE_MODEL_DIR, "unet"), gone, { recursive: true });
    await registry.registerCheckpoint({ checkpoint: { ...base, id: "gone", location: gone } });
    rmSync(gone, { recursive: true });
    await expectStatus(
      registry.streamCheckpoint({ id: "gone" }),
      Code.NOT_FOUND,
      `checkpoint gone: its location: the folder ${gone} does not exist`,
    );
    await expectStatus(registry.getLineage({}), Code.INVALID_ARGUMENT, "checkpoint_id is required");
    await expectStatus(
      registry.getLineage({ checkpointId: "nope" }),
      Code.NOT_FOUND,
      "checkpoint nope is not registered",
    );
  });

  test("NUL bytes, huge numbers, unknown runs and 100k-character ids: clear errors, no database text", async () => {
    const long = "x".repeat(100_000);
    const cases: [Record<string, unknown>, Code, string][] = [
      [{ ...base, id: "a\0b" }, Code.INVALID_ARGUMENT, "checkpoint.id must not contain a NUL character"],
      [{ ...base, id: long }, Code.INVALID_ARGUMENT, "checkpoint.id is 100000 characters; at most 200"],
      [{ ...base, id: "r", runId: "no-such-run" }, Code.NOT_FOUND, "checkpoint.run_id: run no-such-run does not exist"],
      [
        { ...base, id: "r", epoch: 2 ** 32 - 1 },
        Code.INVALID_ARGUMENT,
        `checkpoint.epoch ${2 ** 32 - 1} is above 2^31 - 1`,
      ],
      [
        { ...base, id: "r", sizeBytes: 2n ** 64n - 1n },
        Code.INVALID_ARGUMENT,
        `checkpoint.size_bytes ${2n ** 64n - 1n} does not match the files at ${BASE_MODEL_DIR}`,
      ],
    ];
    for (const [checkpoint, code, message] of cases) {
      await expectStatus(registry.registerCheckpoint({ checkpoint }), code, message);
    }
    const tooLong = "id is 100000 characters; at most 200";
    await expectStatus(registry.getCheckpoint({ id: long }), Code.INVALID_ARGUMENT, tooLong);
    await expectStatus(registry.streamCheckpoint({ id: long }), Code.INVALID_ARGUMENT, tooLong);
    await expectStatus(
      registry.getCheckpoint({ id: "a\0b" }),
      Code.INVALID_ARGUMENT,
      "id must not contain a NUL character",
    );
    await expectStatus(registry.getRun({ runId: long }), Code.INVALID_ARGUMENT, `run_${tooLong}`);
    await expectStatus(registry.getLineage({ checkpointId: long }), Code.INVALID_ARGUMENT, `checkpoint_${tooLong}`);
    await expectStatus(
      registry.listRuns({ pageToken: long }),
      Code.INVALID_ARGUMENT,
      `page_token '${"x".repeat(200)}... (100000 characters)' is not one this service gave`,
    );
    await expectStatus(
      registry.listRuns({ pageToken: "99999999999999999999" }),
      Code.INVALID_ARGUMENT,
      "page_token '99999999999999999999' is not one this service gave",
    );
  });

  test("ListRuns with a page token it never gave; GetRun of a missing and an unknown run", async () => {
    for (const token of ["abc", "-1", "1.5"]) {
      await expectStatus(
        registry.listRuns({ pageToken: token }),
        Code.INVALID_ARGUMENT,
        `page_token '${token}' is not one this service gave`,
      );
    }
    await expectStatus(registry.getRun({}), Code.INVALID_ARGUMENT, "run_id is required");
    await expectStatus(registry.getRun({ runId: "nope" }), Code.NOT_FOUND, "run nope does not exist");
  });

  test("oversized and malformed messages", async () => {
    const big = bigClient(Registry, procs.registry.address);
    const error = await failure(
      big.registerCheckpoint({ checkpoint: { ...base, id: "huge", location: "x".repeat(OVERSIZED) } }),
    );
    expect(error.code).toBe(Code.RESOURCE_EXHAUSTED);
    await expectMalformed(procs.registry.address, "Registry/GetCheckpoint", "GetCheckpointRequest");
    await expectMalformed(procs.registry.address, "Registry/StreamCheckpoint", "StreamCheckpointRequest", true);
  });
});

const start = { name: "bad", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs: 1, config: TINY_CONFIG };

describe("Trainer", () => {
  test("StartRun: missing fields, a folder that is not a model, unknown prompt set, epochs 0", async () => {
    await expectStatus(trainer.startRun({}), Code.INVALID_ARGUMENT, "base_model_dir is required");
    const missing = join(scratch, "no-such-model");
    await expectStatus(
      trainer.startRun({ ...start, baseModelDir: missing }),
      Code.NOT_FOUND,
      `${missing}: no unet weights (not a model folder)`,
    );
    await expectStatus(
      trainer.startRun({ ...start, promptSet: "nope" }),
      Code.INVALID_ARGUMENT,
      /^prompt_set: unknown prompt set "nope"; known: .*animals.*, or list:/,
    );
    await expectStatus(
      trainer.startRun({ ...start, promptSet: "list:tiger,,frog" }),
      Code.INVALID_ARGUMENT,
      /^prompt_set: prompt set "list:tiger,,frog": empty prompt in the list/,
    );
    await expectStatus(trainer.startRun({ ...start, epochs: 0 }), Code.INVALID_ARGUMENT, "epochs must be in 1..100000");
  });

  test("StartRun: NaN, infinite and out-of-range DdpoConfig values name the field", async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ lr: Number.NaN }, /lr must be > 0/],
      [{ lr: Number.POSITIVE_INFINITY }, /config\.lr must be finite/],
      [{ eta: 0 }, /eta must be a finite number > 0/],
      [{ eta: Number.NaN }, /eta must be a finite number > 0/],
      [{ guidance: Number.NaN }, /guidance must be a finite number >= 1, got NaN/],
      [{ guidance: Number.POSITIVE_INFINITY }, /guidance must be a finite number >= 1, got Infinity/],
      [{ clipRange: Number.NaN }, /clipRange must be >= 0/],
      [{ timestepFraction: 1.5 }, /timestepFraction must be in \(0, 1\]/],
      [{ sampleBatchSize: 0 }, /sampleBatchSize must be an integer in 1..256, got 0/],
      // What the Sampler would refuse mid-run is refused here (the same limits).
      [{ sampleBatchSize: 1e9 }, /sampleBatchSize must be an integer in 1..256, got 1000000000/],
      [
        { sampleBatchSize: 250, sampleBatchesPerEpoch: 20 },
        /samples per epoch \(sampleBatchSize x sampleBatchesPerEpoch\) must be an integer in 1..4096, got 5000/,
      ],
      [{ steps: 2000 }, /steps must be an integer in 1..1000, got 2000/],
      [{ steps: 1e6 }, /steps must be an integer in 1..1000, got 1000000/],
      [{ finetune: { case: "lora", value: { rank: 0, alpha: 1 } } }, /lora\.rank must be an integer in 1..256, got 0/],
      [{ trainBatchSize: 1e6 }, /trainBatchSize must be a positive integer at most 256/],
      [{ innerEpochs: 1e6 }, /innerEpochs must be a positive integer at most 100/],
      [{ loss: 99 }, /config\.loss: unknown value 99/],
      [{ klCoefficient: -1 }, /klCoefficient must be a finite number >= 0, got -1/],
      [{ evaluation: { prompts: ["frog"], seeds: [1n, 1n] } }, /evaluation seeds must be distinct/],
      // "monkey face" is in the animals prompt set: not held out.
      [
        { evaluation: { prompts: ["monkey face", "tea cup"], seeds: [1n] } },
        /config\.evaluation: evaluation prompts must be held out of training; shared: monkey face/,
      ],
      [
        { finetune: { case: "lora", value: { rank: 2, alpha: Number.NaN } } },
        /lora\.alpha must be a finite number > 0, got NaN/,
      ],
    ];
    for (const [config, message] of cases) {
      await expectStatus(
        trainer.startRun({ ...start, config: { ...TINY_CONFIG, ...config } }),
        Code.INVALID_ARGUMENT,
        message,
      );
    }
  });

  test("StartRun: reward sources without a name, with a NaN weight, or naming an unknown reward", async () => {
    await expectStatus(
      trainer.startRun({ ...start, rewards: [{ rewardName: "" }] }),
      Code.INVALID_ARGUMENT,
      "rewards[0].reward_name is required",
    );
    await expectStatus(
      trainer.startRun({ ...start, rewards: [{ rewardName: "jpeg_compressibility", weight: Number.NaN }] }),
      Code.INVALID_ARGUMENT,
      "rewards[0].weight must be finite",
    );
    await expectStatus(
      trainer.startRun({
        ...start,
        rewards: [{ rewardName: "jpeg_compressibility" }, { rewardName: "no_such_reward", weight: 0.5 }],
      }),
      Code.NOT_FOUND,
      new RegExp(`^rewards\\[1\\]: the Rewarder at ${procs.rewarder.address} has no reward 'no_such_reward'`),
    );
    // None of the refused requests left a run behind.
    expect((await registry.listRuns({})).runs).toHaveLength(0);
  });

  test("StartRun and GetRun: NUL bytes and oversized names are INVALID_ARGUMENT, never database text", async () => {
    await expectStatus(
      trainer.startRun({ ...start, name: "a\0b" }),
      Code.INVALID_ARGUMENT,
      "name must not contain a NUL character",
    );
    await expectStatus(
      trainer.startRun({ ...start, rewards: [{ rewardName: "r".repeat(8000) }] }),
      Code.INVALID_ARGUMENT,
      "rewards[0].reward_name is 8000 characters; at most 200",
    );
    await expectStatus(
      trainer.startRun({ ...start, baseCheckpointId: "b\0" }),
      Code.INVALID_ARGUMENT,
      "base_checkpoint_id must not contain a NUL character",
    );
    await expectStatus(
      registry.getRun({ runId: "x".repeat(100_000) }),
      Code.INVALID_ARGUMENT,
      "run_id is 100000 characters; at most 200",
    );
    await expectStatus(
      registry.getRun({ runId: "a\0" }),
      Code.INVALID_ARGUMENT,
      "run_id must not contain a NUL character",
    );
    await expectStatus(
      rewarder.score({ rewardName: "r".repeat(100_000), images: [{ image: image(8, 8) }] }),
      Code.INVALID_ARGUMENT,
      "reward_name is 100000 characters; at most 200",
    );
    await expectStatus(
      sampler.sample({ prompts: ["a"], seeds: [1n], checkpointId: "c".repeat(100_000) }),
      Code.INVALID_ARGUMENT,
      "checkpoint_id is 100000 characters; at most 200",
    );
    // A self-contained Sample names one policy twice; they must agree, and its folders exist.
    const policy = { checkpointId: "b", baseModelDir: "/nonexistent/model" };
    await expectStatus(
      sampler.sample({ prompts: ["a"], seeds: [1n], checkpointId: "a", policy }),
      Code.INVALID_ARGUMENT,
      "policy.checkpoint_id 'b' is not checkpoint_id 'a'",
    );
    await expectStatus(
      sampler.sample({ prompts: ["a"], seeds: [1n], checkpointId: "b", policy }),
      Code.NOT_FOUND,
      /nonexistent\/model does not exist/,
    );
  });

  test("StartRun: malformed endpoints are INVALID_ARGUMENT, unreachable ones UNAVAILABLE, both at once", async () => {
    const started = performance.now();
    const malformed: [string, string, Record<string, unknown>][] = [
      ["sampler_endpoints[0]", "garbage", { samplerEndpoints: ["garbage"] }],
      ["sampler_endpoints[0]", "127.0.0.1:99999", { samplerEndpoints: ["127.0.0.1:99999"] }],
      // Fleet targets: every address of an ipv4: list, the name of a dns: target.
      ["sampler_endpoints[0] address 2", "nope", { samplerEndpoints: ["ipv4:127.0.0.1:5,nope"] }],
      ["sampler_endpoints[0]", "sampler", { samplerEndpoints: ["dns:///sampler"] }],
      [
        "rewards[0].endpoint",
        "http://x:1/",
        { rewards: [{ rewardName: "jpeg_compressibility", endpoint: "http://x:1/" }] },
      ],
    ];
    for (const [field, value, request] of malformed) {
      await expectStatus(
        trainer.startRun({ ...start, ...request }),
        Code.INVALID_ARGUMENT,
        `${field} '${value}' is not a host:port address`,
      );
    }
    // Port 1 on loopback: nothing listens, the connection is refused.
    await expectStatus(
      trainer.startRun({ ...start, rewards: [{ rewardName: "jpeg_compressibility", endpoint: "127.0.0.1:1" }] }),
      Code.UNAVAILABLE,
      /^rewards\[0\]: the Rewarder at 127\.0\.0\.1:1: /,
    );
    await expectStatus(
      trainer.startRun({ ...start, samplerEndpoints: ["127.0.0.1:1"] }),
      Code.UNAVAILABLE,
      /^the Sampler at 127\.0\.0\.1:1: /,
    );
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  test("WatchRun, StopRun, ResumeRun, GetRun: missing and unknown run ids", async () => {
    await expectStatus(trainer.watchRun({}), Code.INVALID_ARGUMENT, "run_id is required");
    await expectStatus(trainer.watchRun({ runId: "nope" }), Code.NOT_FOUND, "run nope does not exist");
    await expectStatus(trainer.stopRun({}), Code.INVALID_ARGUMENT, "run_id is required");
    await expectStatus(trainer.stopRun({ runId: "nope" }), Code.NOT_FOUND, "run nope does not exist");
    await expectStatus(trainer.resumeRun({}), Code.INVALID_ARGUMENT, "run_id is required");
    await expectStatus(
      trainer.resumeRun({ runId: "nope", epochs: 0 }),
      Code.INVALID_ARGUMENT,
      "epochs must be in 1..100000",
    );
    await expectStatus(trainer.resumeRun({ runId: "nope" }), Code.NOT_FOUND, "run nope does not exist");
    await expectStatus(registry.getRun({}), Code.INVALID_ARGUMENT, "run_id is required");
    await expectStatus(registry.getRun({ runId: "nope" }), Code.NOT_FOUND, "run nope does not exist");
  });

  test("oversized and malformed messages", async () => {
    const big = bigClient(Trainer, procs.trainer.address);
    const error = await failure(big.startRun({ ...start, name: "x".repeat(OVERSIZED) }));
    expect(error.code).toBe(Code.RESOURCE_EXHAUSTED);
    await expectMalformed(procs.trainer.address, "Trainer/StartRun", "StartRunRequest");
    await expectMalformed(procs.trainer.address, "Trainer/WatchRun", "WatchRunRequest", true);
  });
});

describe("after all of that", () => {
  test("every process is up, SERVING, and answers a valid call", async () => {
    for (const [name, p] of Object.entries(procs)) {
      expect(p.proc.exitCode, `${name} exited: ${p.stderr()}`).toBeNull();
      const service = `ddpo.v1.${name[0]!.toUpperCase()}${name.slice(1)}`;
      expect(await healthCheck(p.address, "")).toBe("SERVING");
      expect(await healthCheck(p.address, service)).toBe("SERVING");
    }
    expect((await rewarder.listRewards({})).rewards.map((r) => r.name)).toContain("jpeg_compressibility");
    const { scores } = await rewarder.score({ rewardName: "jpeg_compressibility", images: [{ image: image(8, 8) }] });
    expect(scores).toHaveLength(1);
    expect((await registry.getCheckpoint({ id: "base-1" })).checkpoint?.location).toBe(BASE_MODEL_DIR);

    // A whole (one-epoch) run through all four services.
    const { run } = await trainer.startRun({ ...start, name: "valid" }, { timeoutMs: 30_000 });
    const events = [];
    for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 60_000 })) events.push(e);
    const last = events.at(-1)!;
    expect(last.event.case === "status" && last.event.value.status).toBe(RunStatus.COMPLETED);
    expect((await registry.getRun({ runId: run!.id })).epochs).toHaveLength(1);
    // The default Sampler is not recorded: the run finds the Trainer's current one when resumed.
    expect((await registry.getRun({ runId: run!.id })).run!.samplerEndpoints).toEqual([]);
    expect((await sampler.getStatus({})).checkpointId).not.toBe("");
    for (const [name, p] of Object.entries(procs)) expect(p.proc.exitCode, name).toBeNull();
    validRunId = run!.id;
  }, 60_000);
});

describe("StartRun request_id and ResumeRun budgets", () => {
  test("a retried StartRun with one request_id starts one run; ResumeRun cannot shrink or silently change a budget", async () => {
    const request = { ...start, name: "retried", epochs: 2, requestId: "client-request-1" };
    // A client that gives up at once, then retries twice with the same request_id.
    await failure(trainer.startRun(request, { timeoutMs: 1 }));
    const first = (await trainer.startRun(request, { timeoutMs: 30_000 })).run!;
    const again = (await trainer.startRun(request, { timeoutMs: 30_000 })).run!;
    expect(again.id).toBe(first.id);
    await expectStatus(
      trainer.startRun({ ...request, epochs: 3 }),
      Code.ALREADY_EXISTS,
      `request_id client-request-1 already started run ${first.id} with other settings`,
    );
    // While it runs: the same budget is a no-op, another one is refused rather than ignored.
    expect((await trainer.resumeRun({ runId: first.id, epochs: 2 })).run!.epochs).toBe(2);
    await expectStatus(
      trainer.resumeRun({ runId: first.id, epochs: 3 }),
      Code.FAILED_PRECONDITION,
      /^run .* with a budget of 2 epochs; StopRun it before changing the budget$/,
    );
    for await (const _ of trainer.watchRun({ runId: first.id }, { timeoutMs: 60_000 }));
    const done = (await registry.getRun({ runId: first.id })).run!;
    expect([done.status, done.epochs, done.epochsDone]).toEqual([RunStatus.COMPLETED, 2, 2]);
    expect((await registry.listRuns({})).runs.filter((r) => r.name === "retried")).toHaveLength(1);
    await expectStatus(
      trainer.resumeRun({ runId: first.id, epochs: 1 }),
      Code.INVALID_ARGUMENT,
      `epochs 1 is below the 2 epochs run ${first.id} has done`,
    );
    expect((await registry.getRun({ runId: first.id })).run!.epochs).toBe(2);
  }, 60_000);
});

describe("base_checkpoint_id", () => {
  test("an unregistered id is NOT_FOUND and registers nothing; a mismatched kind or rank is INVALID_ARGUMENT", async () => {
    await expectStatus(
      trainer.startRun({ ...start, baseCheckpointId: "never-registered" }),
      Code.NOT_FOUND,
      "base_checkpoint_id never-registered is not registered",
    );
    await expectStatus(
      registry.getCheckpoint({ id: "never-registered" }),
      Code.NOT_FOUND,
      "checkpoint never-registered is not registered",
    );
    const earlier = `${validRunId}/epoch-1`;
    await expectStatus(
      trainer.startRun({
        ...start,
        baseCheckpointId: earlier,
        config: { ...TINY_CONFIG, finetune: { case: "full", value: {} } },
      }),
      Code.INVALID_ARGUMENT,
      `base_checkpoint_id ${earlier} is a LoRA checkpoint; config must fine-tune LoRA`,
    );
    await expectStatus(
      trainer.startRun({
        ...start,
        baseCheckpointId: earlier,
        config: { ...TINY_CONFIG, finetune: { case: "lora", value: { rank: 3, alpha: 3 } } },
      }),
      Code.INVALID_ARGUMENT,
      `base_checkpoint_id ${earlier} has LoRA rank 2; config.lora.rank is 3`,
    );
    await expectStatus(
      trainer.startRun({ ...start, baseModelDir: truncatedModel, baseCheckpointId: earlier }),
      Code.INVALID_ARGUMENT,
      new RegExp(
        `^base_checkpoint_id ${earlier} descends from base-\\w+ at ${BASE_MODEL_DIR}, not from base_model_dir ${truncatedModel}$`,
      ),
    );
  });

  test("the base model is named by its folder's digest: a copy is the same checkpoint, an edited copy another", async () => {
    const { run: first } = await registry.getRun({ runId: validRunId });
    const copy = join(scratch, "data", "runs", "model-copy");
    cpSync(BASE_MODEL_DIR, copy, { recursive: true });
    const same = (await trainer.startRun({ ...start, name: "copy", baseModelDir: copy })).run!;
    expect(same.baseCheckpointId).toBe(first!.baseCheckpointId);
    await trainer.stopRun({ runId: same.id, immediate: true });
    writeFileSync(join(copy, "README.md"), "edited");
    const edited = (await trainer.startRun({ ...start, name: "edited", baseModelDir: copy })).run!;
    expect(edited.baseCheckpointId).toMatch(/^base-[0-9a-f]{16}$/);
    expect(edited.baseCheckpointId).not.toBe(first!.baseCheckpointId);
    await trainer.stopRun({ runId: edited.id, immediate: true });
  }, 60_000);

  test("an earlier run's LoRA checkpoint: the new run continues that policy, lineage through both runs", async () => {
    const earlier = `${validRunId}/epoch-1`;
    // Another seed: a fresh LoRA init would differ from the earlier run's adapters everywhere.
    const { run } = await trainer.startRun(
      { ...start, name: "continued", baseCheckpointId: earlier, config: { ...TINY_CONFIG, seed: 99 } },
      { timeoutMs: 30_000 },
    );
    expect(run!.baseCheckpointId).toBe(earlier);
    const events = [];
    for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 60_000 })) events.push(e);
    const last = events.at(-1)!;
    expect(last.event.case === "status" && last.event.value).toMatchObject({ status: RunStatus.COMPLETED });
    const next = `${run!.id}/epoch-1`;
    const lineage = (await registry.getLineage({ checkpointId: next })).ancestry;
    expect(lineage.map((c) => c.id).slice(0, 2)).toEqual([next, earlier]);
    expect(lineage.at(-1)!.kind).toBe(CheckpointKind.BASE);
    // The new adapters are the earlier ones plus one small update (lr 1e-4), not a fresh init.
    const adapters = async (id: string) => {
      const { checkpoint } = await registry.getCheckpoint({ id });
      return readSafetensors(join(checkpoint!.location, "lora", "adapter_model.safetensors")).tensors;
    };
    const [before, after] = [await adapters(earlier), await adapters(next)];
    let largest = 0;
    let moved = 0;
    for (const [name, t] of before) {
      if (!name.includes("lora_A")) continue;
      const u = after.get(name)!.data;
      for (let i = 0; i < t.data.length; i++) {
        largest = Math.max(largest, Math.abs(t.data[i]!));
        moved = Math.max(moved, Math.abs(u[i]! - t.data[i]!));
      }
    }
    expect(largest).toBeGreaterThan(0);
    expect(moved).toBeLessThan(0.05 * largest);
  }, 60_000);
});

describe("ddpo pull", () => {
  const ddpo = (...args: string[]) =>
    Bun.spawnSync([process.execPath, "run", join(import.meta.dir, "..", "..", "services", "cli", "ddpo.ts"), ...args], {
      stdout: "pipe",
      stderr: "pipe",
    });

  test("copies a run's checkpoint out of the store through StreamCheckpoint, byte for byte", async () => {
    const id = `${validRunId}/epoch-1`;
    const out = join(scratch, "pulled");
    const r = ddpo("pull", id, "--out", out, "--registry", procs.registry.address);
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const { checkpoint } = await registry.getCheckpoint({ id });
    for (const file of ["lora/adapter_model.safetensors", "optimizer.safetensors", "trainer_state.json"]) {
      expect(readFileSync(join(out, file)).equals(readFileSync(join(checkpoint!.location, file)))).toBe(true);
    }
    expect(r.stdout.toString()).toContain(`sha256 ${checkpoint!.sha256.slice(0, 12)}, as registered`);
    // A folder with files in it is refused; an unknown id is the Registry's NOT_FOUND.
    const again = ddpo("pull", id, "--out", out, "--registry", procs.registry.address);
    expect([again.exitCode, again.stderr.toString().trim()]).toEqual([1, `ddpo pull: ${out} is not empty`]);
    const unknown = ddpo("pull", "nope", "--out", join(scratch, "nope"), "--registry", procs.registry.address);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr.toString()).toContain("checkpoint nope is not registered");
  }, 30_000);
});
