// Typed handlers for a protobuf-es service, in connect-es's ServiceImpl style: a unary rpc is
// `(request, context) => response` (sync or async), a server-streaming rpc is an async generator.
// bindService pairs a descriptor with its handlers; grpcImplementation turns them into grpc-js
// handlers, so no rpc needs hand-written glue. Every failure becomes a status (service-error.ts);
// none escapes into the event loop.

import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { fromBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type {
  Deadline,
  handleServerStreamingCall,
  handleUnaryCall,
  Metadata,
  MethodDefinition,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { encodeMessage, methodDefinition, methodPath } from "./service-definition.ts";
import { Code, failureStatus, ServiceError } from "./service-error.ts";

/** What a handler knows about its call besides the request. */
export interface CallContext {
  /** Request headers, e.g. `authorization`. */
  readonly metadata: Metadata;
  /**
   * Aborted when the call ends early: the client cancelled, its deadline passed, or the server
   * was force-closed. The reason is a ServiceError (CANCELLED or DEADLINE_EXCEEDED). Long work
   * should watch it; nothing sent after it fires reaches anyone.
   */
  readonly signal: AbortSignal;
  /** When the client stops waiting; undefined when it set no deadline. */
  readonly deadline: Date | undefined;
  /** "ipv4:127.0.0.1:53122". */
  readonly peer: string;
  /** "/ddpo.v1.Rewarder/Score". */
  readonly path: string;
}

export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => Promise<MessageInitShape<O>> | MessageInitShape<O>;

export type ServerStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handler type of one rpc. No ddpo.v1 rpc streams requests, so those kinds map to never. */
export type MethodHandler<M> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? UnaryHandler<I, O>
  : M extends {
        methodKind: "server_streaming";
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? ServerStreamingHandler<I, O>
    : never;

/** One handler per rpc, keyed by the rpc's local name (`score`, `listRewards`). */
export type ServiceImpl<S extends GenServiceMethods> = { [K in keyof S]: MethodHandler<S[K]> };

/** A service descriptor with its handlers, ready for startServer. */
export interface BoundService {
  readonly service: DescService;
  readonly handlers: Readonly<Record<string, unknown>>;
}

export function bindService<S extends GenServiceMethods>(service: GenService<S>, impl: ServiceImpl<S>): BoundService {
  for (const method of service.methods) {
    if (method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming") {
      throw new Error(`${method.parent.typeName}.${method.name}: ${method.methodKind} rpcs are not supported`);
    }
    if (typeof (impl as Record<string, unknown>)[method.localName] !== "function") {
      throw new Error(`${method.parent.typeName}.${method.name}: no handler named ${method.localName}`);
    }
  }
  return { service, handlers: impl };
}

/** Stands in for a request that failed to decode, so the handler can answer INVALID_ARGUMENT. */
class MalformedRequest {
  constructor(readonly reason: string) {}
}

function checkedRequest(method: DescMethod, request: unknown): unknown {
  if (request instanceof MalformedRequest) {
    throw new ServiceError(Code.INVALID_ARGUMENT, `malformed ${method.input.typeName}: ${request.reason}`);
  }
  return request;
}

/**
 * The server side of a method: requests decode leniently (grpc-js would answer INTERNAL for a
 * decode error, but bad bytes are the client's fault), responses arrive already encoded.
 */
function serverMethodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  return {
    ...methodDefinition(method),
    requestDeserialize: (bytes: Buffer) => {
      try {
        return fromBinary(method.input, bytes);
      } catch (error) {
        return new MalformedRequest(error instanceof Error ? error.message : String(error));
      }
    },
    responseSerialize: (bytes) => bytes as Buffer,
  };
}

export function serverServiceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) definition[method.localName] = serverMethodDefinition(method);
  return definition as ServiceDefinition;
}

const DEADLINE_SLACK_MS = 100;

function deadlineDate(deadline: Deadline): Date | undefined {
  if (deadline instanceof Date) return deadline;
  return Number.isFinite(deadline) ? new Date(deadline) : undefined;
}

/** A context whose signal follows the call's cancellation; dispose() detaches it when the call ends. */
function callContext(
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
  path: string,
): { context: CallContext; dispose: () => void } {
  const controller = new AbortController();
  const deadline = deadlineDate(call.getDeadline());
  // grpc-js reports both a client cancel and an expired deadline as "cancelled". The client's
  // own deadline timer usually fires first and resets the stream just before the server's copy
  // of the deadline (which starts a little later), so a cancel close to it counts as expiry.
  const onCancelled = () => {
    const expired = deadline !== undefined && Date.now() >= deadline.getTime() - DEADLINE_SLACK_MS;
    controller.abort(
      expired
        ? new ServiceError(Code.DEADLINE_EXCEEDED, "deadline exceeded")
        : new ServiceError(Code.CANCELLED, "call cancelled by the client"),
    );
  };
  // Both call kinds are EventEmitters; their on() overloads just do not unify.
  const events = call as unknown as NodeJS.EventEmitter;
  events.on("cancelled", onCancelled);
  if (call.cancelled) onCancelled();
  const context: CallContext = {
    metadata: call.metadata,
    signal: controller.signal,
    deadline,
    peer: call.getPeer(),
    path,
  };
  return { context, dispose: () => events.off("cancelled", onCancelled) };
}

export type FailureLog = (message: string) => void;

function logUnexpected(log: FailureLog, path: string, error: unknown): void {
  log(`${path} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
}

function unaryCall(method: DescMethod, handler: UnaryHandler<DescMessage, DescMessage>, log: FailureLog) {
  const path = methodPath(method);
  const onCall: handleUnaryCall<unknown, Buffer> = (call, callback) => {
    const { context, dispose } = callContext(call, path);
    (async () => {
      const request = checkedRequest(method, call.request) as MessageShape<DescMessage>;
      return encodeMessage(method.output, await handler(request, context));
    })()
      .then(
        (response) => callback(null, response),
        (error) => {
          const status = failureStatus(error, context.signal);
          if (status.unexpected) logUnexpected(log, path, error);
          callback({ code: status.code, details: status.details, metadata: status.metadata });
        },
      )
      // Only a failure inside grpc-js itself lands here; log it rather than reject into the void.
      .catch((error) => logUnexpected(log, path, error))
      .finally(dispose);
  };
  return onCall;
}

/** Resolves when the stream wants more data or the call is gone, whichever comes first. */
function drained(call: ServerWritableStream<unknown, Buffer>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.on("drain", done);
    signal.addEventListener("abort", done);
  });
}

function serverStreamingCall(
  method: DescMethod,
  handler: ServerStreamingHandler<DescMessage, DescMessage>,
  log: FailureLog,
) {
  const path = methodPath(method);
  const stream = async (call: ServerWritableStream<unknown, Buffer>) => {
    const { context, dispose } = callContext(call, path);
    try {
      const request = checkedRequest(method, call.request) as MessageShape<DescMessage>;
      // Leaving the loop early (cancel) calls the generator's return(), so its finally blocks run.
      for await (const response of handler(request, context)) {
        if (context.signal.aborted) break;
        if (!call.write(encodeMessage(method.output, response))) await drained(call, context.signal);
      }
      call.end();
    } catch (error) {
      const status = failureStatus(error, context.signal);
      if (status.unexpected) logUnexpected(log, path, error);
      // grpc-js's documented way to end a server stream with a status.
      call.emit("error", { code: status.code, details: status.details, metadata: status.metadata });
    } finally {
      dispose();
    }
  };
  // grpc-js ignores the handler's return value, so a rejection must not escape (see unaryCall).
  const onCall: handleServerStreamingCall<unknown, Buffer> = (call) => {
    stream(call).catch((error) => logUnexpected(log, path, error));
  };
  return onCall;
}

/** grpc-js handlers for a bound service, keyed like serverServiceDefinition. */
export function grpcImplementation(bound: BoundService, log: FailureLog): UntypedServiceImplementation {
  const implementation: UntypedServiceImplementation = {};
  for (const method of bound.service.methods) {
    const handler = (bound.handlers[method.localName] as (...args: unknown[]) => unknown).bind(bound.handlers);
    implementation[method.localName] =
      method.methodKind === "unary"
        ? unaryCall(method, handler as UnaryHandler<DescMessage, DescMessage>, log)
        : serverStreamingCall(method, handler as ServerStreamingHandler<DescMessage, DescMessage>, log);
  }
  return implementation;
}
