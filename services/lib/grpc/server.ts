// One gRPC server process's transport: the bound services plus grpc.health.v1 and server
// reflection, optional bearer-token auth and TLS, deliberate message size limits, loopback by
// default, and a graceful close.

import {
  ServerCredentials as Credentials,
  Server,
  type ServerCredentials,
  type ServerInterceptor,
} from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import { bearerTokenInterceptor } from "./bearer-token.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./message-size.ts";
import { reflectionService } from "./reflection.ts";
import { type BoundService, type FailureLog, grpcImplementation, serverServiceDefinition } from "./service-handlers.ts";

export const DEFAULT_CLOSE_TIMEOUT_MS = 5000;

export interface ServerTls {
  /** PEM certificate chain and private key. */
  cert: string | Buffer;
  key: string | Buffer;
}

export interface StartServerOptions {
  /** host:port to bind; port 0 picks a free one. Default 127.0.0.1:0 (loopback only). */
  address?: string;
  services: readonly BoundService[];
  /** When set, every rpc except health checks needs `authorization: Bearer <token>`. */
  token?: string;
  /** Serve TLS instead of plaintext. */
  tls?: ServerTls;
  /** Largest message accepted or sent, in bytes; bigger ones fail with RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /** Where unexpected handler failures are reported (default console.error). */
  log?: FailureLog;
  /**
   * Close each client connection after about this long (+-10%, GOAWAY; calls in progress finish
   * on it): clients reconnect and re-resolve their target, so a load-balanced `dns:` client finds
   * servers added behind the name. Default: connections live as long as the client keeps them.
   */
  maxConnectionAgeMs?: number;
}

export type { ServingStatus };

export interface RunningServer {
  /** host:port actually bound (the chosen port when asked for 0). */
  readonly address: string;
  readonly port: number;
  /** Health status of one service ("ddpo.v1.Sampler") or of the whole server (""). */
  setServingStatus(service: string, status: ServingStatus): void;
  /**
   * Reports NOT_SERVING, stops accepting calls and waits for running ones up to timeoutMs,
   * then cancels the rest (their handlers' signals fire). Safe to call twice.
   */
  close(timeoutMs?: number): Promise<void>;
}

/** "127.0.0.1:0" -> "127.0.0.1", "[::1]:50051" -> "[::1]". */
function hostOf(address: string): string {
  const colon = address.lastIndexOf(":");
  if (colon < 0) throw new Error(`address must be host:port, got ${JSON.stringify(address)}`);
  return address.slice(0, colon);
}

function bind(server: Server, address: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, credentials, (error, port) =>
      error ? reject(new Error(`cannot bind ${address}: ${error.message}`)) : resolve(port),
    ),
  );
}

export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const address = options.address ?? "127.0.0.1:0";
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const log = options.log ?? ((message: string) => console.error(message));
  const interceptors: ServerInterceptor[] = options.token === undefined ? [] : [bearerTokenInterceptor(options.token)];
  const server = new Server({
    interceptors,
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
    ...(options.maxConnectionAgeMs === undefined ? {} : { "grpc.max_connection_age_ms": options.maxConnectionAgeMs }),
  });

  const names = options.services.map((bound) => bound.service.typeName);
  if (new Set(names).size !== names.length) throw new Error(`a service is bound twice: ${names.join(", ")}`);
  for (const bound of options.services) {
    server.addService(serverServiceDefinition(bound.service), grpcImplementation(bound, log));
  }
  const health = new HealthImplementation(Object.fromEntries(["", ...names].map((name) => [name, "SERVING"])));
  health.addToServer(server);
  reflectionService(options.services.map((bound) => bound.service)).addToServer(server);

  const credentials = options.tls
    ? Credentials.createSsl(null, [
        { cert_chain: Buffer.from(options.tls.cert), private_key: Buffer.from(options.tls.key) },
      ])
    : Credentials.createInsecure();
  const port = await bind(server, address, credentials);

  let closing: Promise<void> | undefined;
  return {
    address: `${hostOf(address)}:${port}`,
    port,
    setServingStatus: (service, status) => health.setStatus(service, status),
    close(timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS) {
      closing ??= new Promise<void>((resolve) => {
        for (const name of ["", ...names]) health.setStatus(name, "NOT_SERVING");
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, timeoutMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}
