// The server bootstrap around the services: bearer-token auth, grpc.health.v1, server reflection,
// TLS with a certificate made at test time, and a graceful close that falls back to force.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  type Client,
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  Metadata,
  type ServiceClientConstructor,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Rewarder } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import {
  bindService,
  Code,
  createClient,
  type RunningServer,
  ServiceError,
  startServer,
} from "../../services/lib/grpc/index.ts";
import { healthCheck } from "./health.ts";
import { hasOpenssl, makeSelfSignedCert } from "./self-signed.ts";
import { CHECKPOINT, handlerEvents, testRewarder, testSampler, unimplemented } from "./test-services.ts";

const TOKEN = "s3cret-token";

async function failure(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ServiceError);
    return error as ServiceError;
  }
  throw new Error("expected the call to fail");
}

async function collectAll<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

/** One request on grpc.reflection.v1's bidi stream, as grpcurl would send it. */
function reflect(address: string, request: Record<string, string>, metadata = new Metadata()): Promise<unknown> {
  const packageDir = dirname(fileURLToPath(import.meta.resolve("@grpc/reflection")));
  const definition = loadSync(join(packageDir, "../proto/grpc/reflection/v1/reflection.proto"), { keepCase: true });
  const grpcPackage = loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: { v1: GrpcObject & { ServerReflection: ServiceClientConstructor } } };
  };
  const client: Client & { ServerReflectionInfo: (m: Metadata) => NodeJS.ReadWriteStream } =
    new grpcPackage.grpc.reflection.v1.ServerReflection(address, credentials.createInsecure()) as never;
  return new Promise<unknown>((resolve, reject) => {
    const call = client.ServerReflectionInfo(metadata);
    call.on("data", resolve);
    call.on("error", reject);
    call.write(request as never);
    call.end();
  }).finally(() => client.close());
}

describe("with a token", () => {
  let server: RunningServer;

  beforeAll(async () => {
    server = await startServer({ services: [testRewarder(handlerEvents())], token: TOKEN, log: () => {} });
  });
  afterAll(() => server?.close(1000));

  test("no token or a wrong one is UNAUTHENTICATED; the right one passes", async () => {
    for (const options of [{}, { token: "wrong" }, { token: `${TOKEN}x` }, { token: "" }]) {
      const client = createClient(Rewarder, server.address, options);
      const error = await failure(client.listRewards({}));
      expect(error.code).toBe(Code.UNAUTHENTICATED);
      client.close();
    }
    const client = createClient(Rewarder, server.address, { token: TOKEN });
    expect((await client.listRewards({})).rewards[0]?.name).toBe("mean_red");
    client.close();
  });

  test("health answers without the token, per service, and follows setServingStatus", async () => {
    expect(await healthCheck(server.address, "")).toBe("SERVING");
    expect(await healthCheck(server.address, "ddpo.v1.Rewarder")).toBe("SERVING");
    server.setServingStatus("ddpo.v1.Rewarder", "NOT_SERVING");
    expect(await healthCheck(server.address, "ddpo.v1.Rewarder")).toBe("NOT_SERVING");
    server.setServingStatus("ddpo.v1.Rewarder", "SERVING");
    await expect(healthCheck(server.address, "ddpo.v1.Nope")).rejects.toMatchObject({ code: Code.NOT_FOUND });
  });

  test("reflection needs the token", async () => {
    await expect(reflect(server.address, { list_services: "*" })).rejects.toMatchObject({
      code: Code.UNAUTHENTICATED,
    });
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${TOKEN}`);
    const response = (await reflect(server.address, { list_services: "*" }, metadata)) as {
      list_services_response: { service: { name: string }[] };
    };
    expect(response.list_services_response.service.map((s) => s.name)).toContain("ddpo.v1.Rewarder");
  });
});

describe("reflection", () => {
  let server: RunningServer;

  beforeAll(async () => {
    server = await startServer({
      services: [testRewarder(handlerEvents()), testSampler(handlerEvents()), unimplemented(Registry)],
    });
  });
  afterAll(() => server?.close(1000));

  test("lists the services, health included", async () => {
    const response = (await reflect(server.address, { list_services: "*" })) as {
      list_services_response: { service: { name: string }[] };
    };
    expect(response.list_services_response.service.map((s) => s.name).sort()).toEqual([
      "ddpo.v1.Registry",
      "ddpo.v1.Rewarder",
      "ddpo.v1.Sampler",
      "grpc.health.v1.Health",
    ]);
  });

  test("includes well-known imports (Registry uses google.protobuf.Timestamp)", async () => {
    const response = (await reflect(server.address, { file_containing_symbol: "ddpo.v1.Checkpoint" })) as {
      file_descriptor_response: { file_descriptor_proto: Buffer[] };
    };
    const names = response.file_descriptor_response.file_descriptor_proto.map(
      (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
    );
    expect(names).toContain("ddpo/v1/registry.proto");
    expect(names).toContain("google/protobuf/timestamp.proto");
    const registry = createClient(Registry, server.address);
    expect((await failure(registry.getLineage({ checkpointId: "x" }))).code).toBe(Code.UNIMPLEMENTED);
    expect((await failure(collectAll(registry.streamCheckpoint({ id: "x" })))).code).toBe(Code.UNIMPLEMENTED);
    registry.close();
  });

  test("serves the file declaring a symbol, with its imports", async () => {
    const response = (await reflect(server.address, { file_containing_symbol: "ddpo.v1.Sampler" })) as {
      file_descriptor_response: { file_descriptor_proto: Buffer[] };
    };
    const files = response.file_descriptor_response.file_descriptor_proto.map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes),
    );
    const sampler = files.find((f) => f.name === "ddpo/v1/sampler.proto");
    expect(sampler?.service[0]?.method.map((m) => m.name)).toEqual(["LoadCheckpoint", "Sample", "GetStatus"]);
    expect(files.map((f) => f.name)).toContain("ddpo/v1/common.proto");
  });
});

describe("close", () => {
  test("waits for running calls up to the timeout, then cancels them", async () => {
    const events = handlerEvents();
    const server = await startServer({ services: [testSampler(events)] });
    const client = createClient(Sampler, server.address);
    const stream = (async () => {
      for await (const _ of client.sample({ prompts: ["block"], seeds: [1n], checkpointId: CHECKPOINT }));
    })();
    stream.catch(() => {});
    await events.streamBlocked.promise;
    const started = performance.now();
    await server.close(300);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(3000);
    expect(((await events.abortReason.promise) as ServiceError).code).toBe(Code.CANCELLED);
    await events.streamFinally.promise;
    await server.close(); // twice is fine
    const error = await failure(createClient(Sampler, server.address).getStatus({}, { timeoutMs: 2000 }));
    expect(error.code).toBe(Code.UNAVAILABLE);
    client.close();
  });

  test("waitForReady waits for a server that starts late", async () => {
    const probe = await startServer({ services: [testRewarder(handlerEvents())] });
    const address = probe.address;
    await probe.close();
    const client = createClient(Rewarder, address);
    expect((await failure(client.listRewards({}, { timeoutMs: 2000 }))).code).toBe(Code.UNAVAILABLE);
    const waiting = client.listRewards({}, { timeoutMs: 5000, waitForReady: true });
    await Bun.sleep(200);
    const late = await startServer({ address, services: [testRewarder(handlerEvents())] });
    try {
      expect((await waiting).rewards).toHaveLength(1);
    } finally {
      client.close();
      await late.close(1000);
    }
  });

  test("with nothing running it closes at once and health stops answering", async () => {
    const server = await startServer({ services: [testRewarder(handlerEvents())] });
    expect(await healthCheck(server.address, "")).toBe("SERVING");
    const started = performance.now();
    await server.close(5000);
    expect(performance.now() - started).toBeLessThan(1000);
    await expect(healthCheck(server.address, "")).rejects.toMatchObject({ code: Code.UNAVAILABLE });
  });
});

describe("TLS", () => {
  // Skipped, not missing: without openssl there is no way to make a certificate here.
  test.skipIf(!hasOpenssl)(
    "serves TLS with a self-signed certificate; plaintext and untrusted clients fail",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "ddpo-grpc-tls-"));
      try {
        const { cert, key } = makeSelfSignedCert(dir);
        const server = await startServer({
          services: [testRewarder(handlerEvents())],
          tls: { cert, key },
          token: TOKEN,
        });
        try {
          const byName = createClient(Rewarder, `localhost:${server.port}`, { tls: { ca: cert }, token: TOKEN });
          expect((await byName.listRewards({})).rewards).toHaveLength(1);
          byName.close();
          const tls = { ca: cert, serverName: "localhost" };
          const byAddress = createClient(Rewarder, server.address, { tls, token: TOKEN });
          expect((await byAddress.listRewards({})).rewards).toHaveLength(1);
          byAddress.close();
          // Bun refuses an IP address as the TLS server name: say so instead of failing to connect.
          expect(() => createClient(Rewarder, server.address, { tls: { ca: cert } })).toThrow(/host name/);
          // An address list has no one host name: the name in the certificates must be given.
          expect(() => createClient(Rewarder, `ipv4:${server.address}`, { tls: { ca: cert } })).toThrow(/serverName/);
          const fleet = createClient(Rewarder, `ipv4:${server.address}`, { tls, token: TOKEN });
          expect((await fleet.listRewards({})).rewards).toHaveLength(1);
          fleet.close();

          const plaintext = createClient(Rewarder, server.address, { token: TOKEN });
          expect((await failure(plaintext.listRewards({}, { timeoutMs: 3000 }))).code).toBe(Code.UNAVAILABLE);
          plaintext.close();
          const untrusted = createClient(Rewarder, `localhost:${server.port}`, { tls: true, token: TOKEN });
          expect((await failure(untrusted.listRewards({}, { timeoutMs: 3000 }))).code).toBe(Code.UNAVAILABLE);
          untrusted.close();
        } finally {
          await server.close(1000);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe("max connection age", () => {
  test("the server closes aged connections (the client reconnects, from a new port); a call in progress finishes", async () => {
    // ListRewards answers with the caller's peer (its connection); Score takes 800 ms.
    const server = await startServer({
      maxConnectionAgeMs: 300,
      services: [
        bindService(Rewarder, {
          listRewards: (_, context) => ({ rewards: [{ name: "peer", description: context.peer }] }),
          async score(request) {
            await Bun.sleep(800);
            return { rewardName: request.rewardName, scores: [1] };
          },
        }),
      ],
    });
    const client = createClient(Rewarder, server.address);
    try {
      const peer = async () => (await client.listRewards({}, { timeoutMs: 5000 })).rewards[0]!.description;
      const first = await peer();
      // Spans the connection's age: the GOAWAY lets it finish.
      expect((await client.score({ rewardName: "slow", images: [] }, { timeoutMs: 5000 })).scores).toEqual([1]);
      const later = await peer();
      expect(later).not.toBe(first);
    } finally {
      client.close();
      await server.close(1000);
    }
  });
});
