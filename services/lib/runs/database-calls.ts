// How a service answers when Postgres is the problem: unreachable -> UNAVAILABLE (the client
// retries later; nothing was written), anything else passes through to the gRPC glue.

import { isUnreachable } from "../db/recorder.ts";
import { Code, ServiceError } from "../grpc/index.ts";

export async function databaseCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ServiceError) throw err;
    if (isUnreachable(err)) {
      throw new ServiceError(
        Code.UNAVAILABLE,
        `${what}: the database is unreachable (${(err as Error).message}); retry when it is back`,
      );
    }
    throw err;
  }
}
