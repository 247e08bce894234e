// How failures cross the wire. A handler throws ServiceError to answer with a chosen status;
// anything else it throws is a bug and becomes INTERNAL (logged, never fatal to the process).
// Clients throw ServiceError too, so a handler that lets a downstream failure propagate
// forwards its code (e.g. UNAVAILABLE from a Sampler that went away).

import { Metadata, status } from "@grpc/grpc-js";

/** gRPC status codes (grpc-js's enum: Code.NOT_FOUND === 5). */
export const Code = status;
export type Code = status;

export class ServiceError extends Error {
  override readonly name = "ServiceError";

  constructor(
    readonly code: Code,
    message: string,
    /** Trailers sent with the status (server) or received with it (client). */
    readonly metadata: Metadata = new Metadata(),
  ) {
    super(message);
  }

  /** "NOT_FOUND: no checkpoint ck-1". */
  override toString(): string {
    return `${Code[this.code]}: ${this.message}`;
  }
}

/**
 * Longest status message sent, in UTF-8 bytes: grpc-js percent-encodes it into a trailer (up to
 * 3 characters per byte), and one over the peer's metadata limit (8 KiB by default) turns the
 * status into RESOURCE_EXHAUSTED or a reset stream.
 */
export const MAX_DETAILS_BYTES = 2000;

function bounded(details: string): string {
  const bytes = Buffer.byteLength(details);
  if (bytes <= MAX_DETAILS_BYTES) return details;
  // Keep whole characters: cut where the UTF-8 prefix fits, leaving room for the note.
  let end = Math.min(details.length, MAX_DETAILS_BYTES - 50);
  while (Buffer.byteLength(details.slice(0, end)) > MAX_DETAILS_BYTES - 50) end = Math.floor(end * 0.9);
  return `${details.slice(0, end)}... (${details.length} characters)`;
}

/** The status a failed call answers with; `unexpected` is true when it should be logged as a bug. */
export interface FailureStatus {
  code: Code;
  details: string;
  metadata: Metadata;
  unexpected: boolean;
}

/**
 * Maps what a handler threw to a status. An abort caused by the call's own signal (the client
 * cancelled or the deadline passed) is CANCELLED: nobody is listening, so it is not a bug.
 */
export function failureStatus(error: unknown, signal?: AbortSignal): FailureStatus {
  if (error instanceof ServiceError) {
    return { code: error.code, details: bounded(error.message), metadata: error.metadata, unexpected: false };
  }
  if (signal?.aborted && (error === signal.reason || (error instanceof Error && error.name === "AbortError"))) {
    return { code: Code.CANCELLED, details: "call cancelled", metadata: new Metadata(), unexpected: false };
  }
  const details = error instanceof Error ? error.message : String(error);
  return {
    code: Code.INTERNAL,
    details: bounded(details) || "internal error",
    metadata: new Metadata(),
    unexpected: true,
  };
}

/** A grpc-js client error ({ code, details, metadata }) as a ServiceError. */
export function fromGrpcError(error: unknown): ServiceError {
  if (error instanceof ServiceError) return error;
  const e = error as { code?: unknown; details?: unknown; message?: unknown; metadata?: unknown };
  const code = typeof e?.code === "number" && e.code in Code ? (e.code as Code) : Code.UNKNOWN;
  const details =
    typeof e?.details === "string" ? e.details : typeof e?.message === "string" ? e.message : String(error);
  const metadata = e?.metadata instanceof Metadata ? e.metadata : new Metadata();
  return new ServiceError(code, details, metadata);
}
