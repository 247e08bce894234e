// A typed client from a protobuf-es service descriptor: unary rpcs return Promises, server
// streams are AsyncIterables. Every call takes a deadline and an AbortSignal; failures reject
// with ServiceError carrying the gRPC status code.

import { isIP as isIp } from "node:net";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { type ChannelOptions, Client, credentials, type CallOptions as GrpcCallOptions, Metadata } from "@grpc/grpc-js";
import { AUTHORIZATION_HEADER, bearerHeader } from "./bearer-token.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./message-size.ts";
import { methodDefinition } from "./service-definition.ts";
import { Code, fromGrpcError, ServiceError } from "./service-error.ts";

export interface ClientTls {
  /** PEM root certificate(s) to trust; default: the system's roots. */
  ca?: string | Buffer;
  /** PEM client certificate and key, for servers that ask for one. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name to verify the server certificate against, when it differs from the address's host. */
  serverName?: string;
}

export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Connect with TLS (true: system roots) instead of plaintext. */
  tls?: ClientTls | true;
  /** Largest message sent or accepted, in bytes (default 64 MiB, as the server). */
  maxMessageBytes?: number;
  /** Timeout applied to calls that set none, in ms; default none. */
  timeoutMs?: number;
  channelOptions?: ChannelOptions;
}

export interface CallOptions {
  /** Give up after this many ms (DEADLINE_EXCEEDED); the earlier of this and deadline wins. */
  timeoutMs?: number;
  deadline?: Date;
  /** Aborting cancels the call (CANCELLED on both sides). */
  signal?: AbortSignal;
  /** Extra request headers. */
  metadata?: Readonly<Record<string, string>>;
  /**
   * Wait (until the deadline) for the server to come up instead of failing at once with
   * UNAVAILABLE: for processes that start together.
   */
  waitForReady?: boolean;
}

export type UnaryMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => Promise<MessageShape<O>>;

/** The call starts when iteration starts; breaking out of the loop cancels it. */
export type ServerStreamingMethod<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => AsyncIterable<MessageShape<O>>;

export type ClientMethod<M> = M extends {
  methodKind: "unary";
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? UnaryMethod<I, O>
  : M extends {
        methodKind: "server_streaming";
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? ServerStreamingMethod<I, O>
    : never;

export type ServiceClient<S extends GenServiceMethods> = { [K in keyof S]: ClientMethod<S[K]> } & {
  /** The address it was created for. */
  readonly address: string;
  /** Closes the channel; calls in flight fail with UNAVAILABLE or CANCELLED. */
  close(): void;
};

/** "127.0.0.1:50051" -> "127.0.0.1", "[::1]:50051" -> "::1", "dns:///host:1" -> "host". */
function hostOf(address: string): string {
  const target = address.replace(/^[a-z]+:(\/\/\/?)?/, "");
  const bracketed = /^\[([^\]]+)\]/.exec(target);
  if (bracketed) return bracketed[1]!;
  const colon = target.lastIndexOf(":");
  return colon < 0 ? target : target.slice(0, colon);
}

function channelCredentials(tls: ClientOptions["tls"]) {
  if (!tls) return credentials.createInsecure();
  if (tls === true) return credentials.createSsl();
  const pem = (value: string | Buffer | undefined) => (value === undefined ? null : Buffer.from(value));
  return credentials.createSsl(pem(tls.ca), pem(tls.key), pem(tls.cert));
}

function requestMetadata(token: string | undefined, callOptions: CallOptions | undefined): Metadata {
  const metadata = new Metadata({ waitForReady: callOptions?.waitForReady ?? false });
  for (const [key, value] of Object.entries(callOptions?.metadata ?? {})) metadata.set(key, value);
  if (token !== undefined) metadata.set(AUTHORIZATION_HEADER, bearerHeader(token));
  return metadata;
}

function callDeadline(defaultTimeoutMs: number | undefined, options: CallOptions | undefined): GrpcCallOptions {
  const candidates: number[] = [];
  const timeoutMs = options?.timeoutMs ?? defaultTimeoutMs;
  if (timeoutMs !== undefined) candidates.push(Date.now() + timeoutMs);
  if (options?.deadline) candidates.push(options.deadline.getTime());
  return candidates.length ? { deadline: Math.min(...candidates) } : {};
}

function cancelledBeforeStart(): ServiceError {
  return new ServiceError(Code.CANCELLED, "call cancelled before it started");
}

export function createClient<S extends GenServiceMethods>(
  service: GenService<S>,
  address: string,
  options: ClientOptions = {},
): ServiceClient<S> {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const channelOptions: ChannelOptions = {
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    ...options.channelOptions,
  };
  if (options.tls && options.tls !== true && options.tls.serverName) {
    channelOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
    channelOptions["grpc.default_authority"] = options.tls.serverName;
  }
  const serverName = options.tls && options.tls !== true ? options.tls.serverName : undefined;
  if (options.tls && /^ipv[46]:/.test(address) && !serverName) {
    // An address list has no one host name to check the certificates against.
    throw new Error(`TLS to ${address}: set tls.serverName, the host name in the servers' certificates`);
  }
  if (options.tls && process.versions.bun && isIp(hostOf(address)) && !serverName) {
    // grpc-js sends the host as TLS SNI, which Bun refuses for IP literals (Node only warns).
    throw new Error(
      `TLS to ${address}: address the server by a host name in its certificate (e.g. localhost:port) ` +
        "or set tls.serverName; Bun does not allow an IP address as the TLS server name",
    );
  }
  const client = new Client(address, channelCredentials(options.tls), channelOptions);
  const methods: Record<string, unknown> = {};

  for (const method of service.methods) {
    if (method.localName === "close" || method.localName === "address") {
      throw new Error(`${service.typeName}.${method.name} clashes with the client's own ${method.localName}`);
    }
    const definition = methodDefinition(method);
    const { path, requestSerialize, responseDeserialize } = definition;

    if (method.methodKind === "unary") {
      methods[method.localName] = (request: unknown, callOptions?: CallOptions) =>
        new Promise((resolve, reject) => {
          const signal = callOptions?.signal;
          if (signal?.aborted) return reject(cancelledBeforeStart());
          const call = client.makeUnaryRequest(
            path,
            requestSerialize,
            responseDeserialize,
            request,
            requestMetadata(options.token, callOptions),
            callDeadline(options.timeoutMs, callOptions),
            (error, response) => {
              signal?.removeEventListener("abort", onAbort);
              if (error) reject(fromGrpcError(error));
              else resolve(response);
            },
          );
          const onAbort = () => call.cancel();
          signal?.addEventListener("abort", onAbort, { once: true });
        });
    } else if (method.methodKind === "server_streaming") {
      methods[method.localName] = async function* (request: unknown, callOptions?: CallOptions) {
        const signal = callOptions?.signal;
        if (signal?.aborted) throw cancelledBeforeStart();
        const call = client.makeServerStreamRequest(
          path,
          requestSerialize,
          responseDeserialize,
          request,
          requestMetadata(options.token, callOptions),
          callDeadline(options.timeoutMs, callOptions),
        );
        const onAbort = () => call.cancel();
        signal?.addEventListener("abort", onAbort, { once: true });
        let finished = false;
        try {
          for await (const message of call) yield message;
          finished = true;
        } catch (error) {
          throw fromGrpcError(error);
        } finally {
          signal?.removeEventListener("abort", onAbort);
          // The consumer stopped early: tell the server instead of leaving it streaming.
          if (!finished) call.cancel();
        }
      };
    } else {
      throw new Error(`${service.typeName}.${method.name}: ${method.methodKind} rpcs are not supported`);
    }
  }

  return Object.assign(methods, { address, close: () => client.close() }) as unknown as ServiceClient<S>;
}
