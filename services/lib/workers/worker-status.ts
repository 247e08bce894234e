// A failed worker call as a gRPC status: the handler maps the WorkerError's code, never its text.
import { Code, ServiceError } from "../grpc/index.ts";
import { WorkerError, type WorkerErrorCode } from "./worker-rpc.ts";

const STATUS: Record<WorkerErrorCode, Code> = {
  not_found: Code.NOT_FOUND,
  invalid_argument: Code.INVALID_ARGUMENT,
  failed_precondition: Code.FAILED_PRECONDITION,
  internal: Code.INTERNAL,
};

/** The status of a worker call's failure, its message prefixed with what the call was for. */
export function workerStatus(e: unknown, prefix: string): ServiceError {
  if (e instanceof ServiceError) return e;
  const code = e instanceof WorkerError ? STATUS[e.code] : Code.INTERNAL;
  return new ServiceError(code, `${prefix}${e instanceof Error ? e.message : String(e)}`);
}
