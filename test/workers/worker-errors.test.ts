// Errors cross the worker boundary with a code, and the gRPC handlers map the code, not the
// message: a message that says "does not exist" is still INTERNAL when its code is internal.
import { afterAll, describe, expect, test } from "bun:test";
import { Code, ServiceError } from "../../services/lib/grpc/index.ts";
import { WorkerClient, WorkerError } from "../../services/lib/workers/worker-rpc.ts";
import { workerStatus } from "../../services/lib/workers/worker-status.ts";
import type { CodedWorkerHandlers } from "./coded-worker.ts";

const worker = new WorkerClient<CodedWorkerHandlers>(new URL("./coded-worker.ts", import.meta.url));
afterAll(() => worker.terminate());

async function failure(p: Promise<unknown>): Promise<WorkerError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  if (!(e instanceof WorkerError)) throw new Error(`expected a WorkerError, got ${e}`);
  return e;
}

describe("worker errors", () => {
  test("a WorkerError keeps its code; ENOENT is not_found; anything else internal", async () => {
    const missing = await failure(worker.call("missing", undefined as never));
    expect([missing.code, missing.message]).toEqual(["not_found", "checkpoint folder /nowhere does not exist"]);
    expect((await failure(worker.call("unreadable", undefined as never))).code).toBe("not_found");
    const bug = await failure(worker.call("bug", undefined as never));
    expect(bug.code).toBe("internal");
    expect(await worker.call("ok", { x: 21 })).toBe(42);
  });

  test("handlers map codes to statuses", async () => {
    const status = (e: unknown) => workerStatus(e, "load: ");
    const missing = status(await failure(worker.call("missing", undefined as never)));
    expect([missing.code, missing.message]).toEqual([
      Code.NOT_FOUND,
      "load: checkpoint folder /nowhere does not exist",
    ]);
    expect(status(await failure(worker.call("bug", undefined as never))).code).toBe(Code.INTERNAL);
    expect(status(new WorkerError("invalid_argument", "x")).code).toBe(Code.INVALID_ARGUMENT);
    expect(status(new WorkerError("failed_precondition", "x")).code).toBe(Code.FAILED_PRECONDITION);
    const passed = new ServiceError(Code.ABORTED, "as it was");
    expect(status(passed)).toBe(passed);
  });

  test("a dead worker's calls fail as internal", async () => {
    const doomed = new WorkerClient<CodedWorkerHandlers>(new URL("./coded-worker.ts", import.meta.url));
    doomed.terminate();
    expect((await failure(doomed.call("ok", { x: 1 }))).code).toBe("internal");
  });
});
