// The descriptor-to-grpc-js adapter over real loopback connections: unary and streaming calls,
// cancellation and deadlines reaching handlers, status mapping, malformed and oversized input.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Client, credentials, type ServiceError as GrpcError, Metadata } from "@grpc/grpc-js";
import { Rewarder, ScoreResponseSchema } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import {
  Code,
  createClient,
  type RunningServer,
  type ServiceClient,
  ServiceError,
  startServer,
} from "../../services/lib/grpc/index.ts";
import { CHECKPOINT, type HandlerEvents, handlerEvents, testRewarder, testSampler } from "./test-services.ts";

const MAX_MESSAGE_BYTES = 1024 * 1024;

let events: HandlerEvents;
let server: RunningServer;
let rewarder: ServiceClient<(typeof Rewarder)["method"]>;
let sampler: ServiceClient<(typeof Sampler)["method"]>;
const logged: string[] = [];

// Handlers resolve their events once; each test that blocks a handler starts from fresh ones.
const currentEvents: HandlerEvents = handlerEvents();
function resetEvents() {
  Object.assign(currentEvents, handlerEvents());
}

beforeAll(async () => {
  events = currentEvents;
  server = await startServer({
    services: [testRewarder(events), testSampler(events)],
    maxMessageBytes: MAX_MESSAGE_BYTES,
    log: (message) => logged.push(message),
  });
  rewarder = createClient(Rewarder, server.address);
  sampler = createClient(Sampler, server.address);
});

afterAll(async () => {
  rewarder?.close();
  sampler?.close();
  await server?.close(1000);
});

/** The ServiceError a promise rejects with. */
async function failure(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ServiceError);
    return error as ServiceError;
  }
  throw new Error("expected the call to fail");
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

const image = (red: number) => ({ width: 2, height: 1, rgb: new Uint8Array([red, 0, 0, red, 9, 9]) });

describe("unary", () => {
  test("binds to loopback and answers with typed messages", async () => {
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const listed = await rewarder.listRewards({});
    expect(listed.rewards.map((r) => r.name)).toEqual(["mean_red"]);
    const scored = await rewarder.score({
      rewardName: "mean_red",
      images: [
        { prompt: "a", image: image(10) },
        { prompt: "b", image: image(200) },
      ],
    });
    expect(scored.$typeName).toBe("ddpo.v1.ScoreResponse");
    expect(scored.scores).toEqual([10, 200]);
  });

  test("a thrown ServiceError keeps its code and message", async () => {
    const error = await failure(rewarder.score({ rewardName: "nope" }));
    expect(error.code).toBe(Code.NOT_FOUND);
    expect(error.message).toBe("no reward named nope");
  });

  test("a status message that echoes 100k characters arrives with its code, cut to a bounded length", async () => {
    for (const name of ["x".repeat(100_000), "\u732b".repeat(20_000)]) {
      const error = await failure(rewarder.score({ rewardName: name }));
      expect(error.code).toBe(Code.NOT_FOUND);
      expect(error.message.startsWith(`no reward named ${name.slice(0, 100)}`)).toBe(true);
      expect(error.message).toEndWith(`... (${name.length + 16} characters)`);
      expect(Buffer.byteLength(error.message)).toBeLessThanOrEqual(2000);
    }
  });

  test("an unexpected throw is INTERNAL with its message, logged, and the server stays up", async () => {
    const before = logged.length;
    const error = await failure(rewarder.score({ rewardName: "explode" }));
    expect(error.code).toBe(Code.INTERNAL);
    expect(error.message).toBe("boom: a bug in the reward");
    expect(logged.length).toBe(before + 1);
    expect(logged.at(-1)).toContain("/ddpo.v1.Rewarder/Score failed");
    expect((await rewarder.listRewards({})).rewards).toHaveLength(1);
  });

  test("cancelling through an AbortSignal reaches the handler's signal", async () => {
    resetEvents();
    const controller = new AbortController();
    const call = rewarder.score({ rewardName: "block" }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    expect((await failure(call)).code).toBe(Code.CANCELLED);
    const reason = (await currentEvents.abortReason.promise) as ServiceError;
    expect(reason.code).toBe(Code.CANCELLED);
  });

  test("an already aborted signal never starts the call", async () => {
    const error = await failure(rewarder.listRewards({}, { signal: AbortSignal.abort() }));
    expect(error.code).toBe(Code.CANCELLED);
  });

  test("a deadline fails the call with DEADLINE_EXCEEDED and aborts the handler", async () => {
    resetEvents();
    const started = performance.now();
    const error = await failure(rewarder.score({ rewardName: "block" }, { timeoutMs: 150 }));
    expect(error.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(performance.now() - started).toBeLessThan(2000);
    const reason = (await currentEvents.abortReason.promise) as ServiceError;
    expect(reason.code).toBe(Code.DEADLINE_EXCEEDED);
  });

  test("malformed request bytes are INVALID_ARGUMENT", async () => {
    // A raw client: field 1 (reward_name) claims 5 bytes and carries 1.
    const raw = new Client(server.address, credentials.createInsecure());
    try {
      const error = await new Promise<GrpcError>((resolve, reject) =>
        raw.makeUnaryRequest(
          "/ddpo.v1.Rewarder/Score",
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          Buffer.from([0x0a, 0x05, 0x61]),
          new Metadata(),
          {},
          (err, value) => (err ? resolve(err) : reject(new Error(`answered ${value?.length} bytes`))),
        ),
      );
      expect(error.code).toBe(Code.INVALID_ARGUMENT);
      expect(error.details).toContain("malformed ddpo.v1.ScoreRequest");
      // Well-formed raw bytes go through the same path.
      const ok = await new Promise<Buffer>((resolve, reject) =>
        raw.makeUnaryRequest(
          "/ddpo.v1.Rewarder/Score",
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          Buffer.from([0x0a, 0x08, ...Buffer.from("mean_red")]),
          new Metadata(),
          {},
          (err, value) => (err ? reject(err) : resolve(value!)),
        ),
      );
      expect(fromBinary(ScoreResponseSchema, ok).rewardName).toBe("mean_red");
    } finally {
      raw.close();
    }
  });

  test("a message over the server's limit is RESOURCE_EXHAUSTED and the server stays up", async () => {
    const big = { width: 1024, height: 512, rgb: new Uint8Array(1024 * 512 * 3) };
    const error = await failure(rewarder.score({ rewardName: "mean_red", images: [{ prompt: "x", image: big }] }));
    expect(error.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect((await rewarder.listRewards({})).rewards).toHaveLength(1);
  });
});

describe("server streaming", () => {
  test("streams one typed message per item, in order", async () => {
    const trajectories = await collect(
      sampler.sample({ prompts: ["a cat", "a dog", "a cow"], seeds: [1n, 2n, 3n], checkpointId: CHECKPOINT }),
    );
    expect(trajectories.map((t) => [t.index, t.prompt, t.seed])).toEqual([
      [0, "a cat", 1n],
      [1, "a dog", 2n],
      [2, "a cow", 3n],
    ]);
    expect(trajectories[1]!.logProbs).toEqual([-1.5, -0.5]);
    expect(trajectories[2]!.image?.rgb).toEqual(new Uint8Array([2, 0, 0]));
  });

  test("a ServiceError thrown by the generator ends the stream with its code", async () => {
    const error = await failure(collect(sampler.sample({ prompts: ["a"], seeds: [1n], checkpointId: "other" })));
    expect(error.code).toBe(Code.FAILED_PRECONDITION);
    expect(error.message).toContain("asked for other");
  });

  test("aborting mid-stream cancels the handler and runs its finally", async () => {
    resetEvents();
    const controller = new AbortController();
    const consume = collect(
      sampler.sample(
        { prompts: ["block", "never"], seeds: [1n, 2n], checkpointId: CHECKPOINT },
        { signal: controller.signal },
      ),
    );
    await currentEvents.streamBlocked.promise;
    controller.abort();
    const error = await failure(consume);
    expect(error.code).toBe(Code.CANCELLED);
    expect(((await currentEvents.abortReason.promise) as ServiceError).code).toBe(Code.CANCELLED);
    await currentEvents.streamFinally.promise;
  });

  test("breaking out of the loop cancels the call on the server", async () => {
    resetEvents();
    for await (const trajectory of sampler.sample({ prompts: ["block"], seeds: [1n], checkpointId: CHECKPOINT })) {
      expect(trajectory.prompt).toBe("block");
      break;
    }
    expect(((await currentEvents.abortReason.promise) as ServiceError).code).toBe(Code.CANCELLED);
    await currentEvents.streamFinally.promise;
  });

  test("a stream deadline is DEADLINE_EXCEEDED", async () => {
    resetEvents();
    const error = await failure(
      collect(sampler.sample({ prompts: ["block"], seeds: [1n], checkpointId: CHECKPOINT }, { timeoutMs: 150 })),
    );
    expect(error.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(((await currentEvents.abortReason.promise) as ServiceError).code).toBe(Code.DEADLINE_EXCEEDED);
  });
});
