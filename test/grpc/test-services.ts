// In-test implementations of two real ddpo.v1 services, small enough to exercise the gRPC glue:
// Rewarder for unary calls, Sampler for server streaming. Each records what its handlers saw
// (abort reasons, finally blocks) so tests can check cancellation reached them.

import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Rewarder } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { bindService, Code, ServiceError, type ServiceImpl } from "../../services/lib/grpc/index.ts";

export const CHECKPOINT = "ck-test";

/** Resolves with the signal's reason once it aborts. */
export function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener("abort", () => resolve(signal.reason), { once: true });
  });
}

/** A promise with its resolver, for handlers to report what happened to them. */
export function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export interface HandlerEvents {
  /** The abort reason a blocked handler saw. */
  abortReason: ReturnType<typeof deferred<unknown>>;
  /** A streaming handler's finally block ran. */
  streamFinally: ReturnType<typeof deferred<void>>;
  /** A streaming handler sent its first message and is about to block. */
  streamBlocked: ReturnType<typeof deferred<void>>;
}

export function handlerEvents(): HandlerEvents {
  return { abortReason: deferred(), streamFinally: deferred(), streamBlocked: deferred() };
}

/**
 * Rewarder: "mean_red" scores the mean red channel in [0, 255]; "unknown" is NOT_FOUND;
 * "explode" throws a plain Error; "block" waits for its call to be cancelled.
 */
export function testRewarder(events: HandlerEvents) {
  return bindService(Rewarder, {
    listRewards: () => ({ rewards: [{ name: "mean_red", description: "mean red channel, 0-255" }] }),
    async score(request, context) {
      switch (request.rewardName) {
        case "mean_red":
          return {
            rewardName: request.rewardName,
            scores: request.images.map(({ image }) => {
              const rgb = image?.rgb ?? new Uint8Array();
              let sum = 0;
              for (let i = 0; i < rgb.length; i += 3) sum += rgb[i]!;
              return rgb.length ? sum / (rgb.length / 3) : 0;
            }),
          };
        case "explode":
          throw new Error("boom: a bug in the reward");
        case "block":
          events.abortReason.resolve(await aborted(context.signal));
          throw context.signal.reason;
        default:
          throw new ServiceError(Code.NOT_FOUND, `no reward named ${request.rewardName}`);
      }
    },
  });
}

/** Sampler streaming one tiny trajectory per prompt; the prompt "block" sends one and then waits. */
export function testSampler(events: HandlerEvents) {
  return bindService(Sampler, {
    loadCheckpoint: (request) => ({ checkpointId: request.checkpointId, loadSeconds: 0 }),
    getStatus: () => ({ checkpointId: CHECKPOINT, backend: "cpu" }),
    async *sample(request, context) {
      if (request.checkpointId !== CHECKPOINT) {
        throw new ServiceError(Code.FAILED_PRECONDITION, `loaded ${CHECKPOINT}, asked for ${request.checkpointId}`);
      }
      try {
        for (const [index, prompt] of request.prompts.entries()) {
          yield {
            index,
            prompt,
            seed: request.seeds[index] ?? 0n,
            timesteps: [501, 1],
            logProbs: [-1.5, -0.5],
            image: { width: 1, height: 1, rgb: new Uint8Array([index, 0, 0]) },
            checkpointId: request.checkpointId,
          };
          if (prompt === "block") {
            events.streamBlocked.resolve();
            events.abortReason.resolve(await aborted(context.signal));
            return;
          }
        }
      } finally {
        events.streamFinally.resolve();
      }
    },
  });
}

/** Any service with every rpc answering UNIMPLEMENTED: enough to test what does not call it. */
export function unimplemented<S extends GenServiceMethods>(service: GenService<S>) {
  const fail = (name: string) => new ServiceError(Code.UNIMPLEMENTED, `${name} is not implemented in this test`);
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    impl[method.localName] =
      method.methodKind === "unary"
        ? async () => {
            throw fail(method.name);
          }
        : // biome-ignore lint/correctness/useYield: fails before its first message
          async function* () {
            throw fail(method.name);
          };
  }
  return bindService(service, impl as ServiceImpl<S>);
}
