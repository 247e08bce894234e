// How a service answers when Postgres is the problem: unreachable -> UNAVAILABLE (the client
// retries later; nothing was written); a refused value or a broken reference -> a status naming
// the SQLSTATE, never Postgres's own text (it can quote the input and the schema).

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
    const sqlState = (err as { code?: unknown }).code;
    if (typeof sqlState === "string" && /^[0-9A-Z]{5}$/.test(sqlState)) {
      console.error(`${what}: database error ${sqlState}: ${(err as Error).message}`);
      throw databaseRefusal(what, sqlState);
    }
    throw err;
  }
}

/** Data exceptions (class 22) and constraint violations (23) are the request's fault. */
function databaseRefusal(what: string, sqlState: string): ServiceError {
  const detail = `SQLSTATE ${sqlState}`;
  if (sqlState === "22021" || sqlState === "22P05") {
    return new ServiceError(Code.INVALID_ARGUMENT, `${what}: a text field is not valid text (${detail})`);
  }
  if (sqlState === "22003")
    return new ServiceError(Code.INVALID_ARGUMENT, `${what}: a number is out of range (${detail})`);
  if (sqlState.startsWith("22"))
    return new ServiceError(Code.INVALID_ARGUMENT, `${what}: a value is invalid (${detail})`);
  if (sqlState === "23503") {
    return new ServiceError(
      Code.NOT_FOUND,
      `${what}: it refers to a run or checkpoint that does not exist (${detail})`,
    );
  }
  if (sqlState === "23505") return new ServiceError(Code.ALREADY_EXISTS, `${what}: it already exists (${detail})`);
  return new ServiceError(Code.INTERNAL, `${what}: the database refused the request (${detail}); see the service log`);
}
