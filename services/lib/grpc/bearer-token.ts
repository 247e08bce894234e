// Shared-secret authentication: with a token configured, every call must carry
// `authorization: Bearer <token>`. Health checks are exempt so orchestrators and load balancers
// can probe a service without the secret.

import { createHash, timingSafeEqual } from "node:crypto";
import {
  type Metadata,
  ResponderBuilder,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  ServerListenerBuilder,
  status,
} from "@grpc/grpc-js";

export const AUTHORIZATION_HEADER = "authorization";

/** Paths that never need the token. */
const EXEMPT_PREFIXES = ["/grpc.health.v1.Health/"];

/** The header value a client sends. */
export function bearerHeader(token: string): string {
  return `Bearer ${token}`;
}

/**
 * Constant-time check of an `authorization` value. Comparing digests keeps the time independent
 * of both the content and the length of what the client sent.
 */
export function matchesBearer(value: unknown, token: string): boolean {
  if (typeof value !== "string") return false;
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(value), digest(bearerHeader(token)));
}

export function isAuthorized(metadata: Metadata, token: string): boolean {
  const values = metadata.get(AUTHORIZATION_HEADER);
  return values.length === 1 && matchesBearer(values[0], token);
}

/** Rejects calls without the token with UNAUTHENTICATED before the handler runs or sees a byte. */
export function bearerTokenInterceptor(token: string): ServerInterceptor {
  if (!token) throw new Error("bearer token must not be empty");
  return (method, call: ServerInterceptingCallInterface) => {
    if (EXEMPT_PREFIXES.some((prefix) => method.path.startsWith(prefix))) return new ServerInterceptingCall(call);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        if (isAuthorized(metadata, token)) next(metadata);
        else call.sendStatus({ code: status.UNAUTHENTICATED, details: "missing or wrong bearer token" });
      })
      .build();
    return new ServerInterceptingCall(call, new ResponderBuilder().withStart((next) => next(listener)).build());
  };
}
