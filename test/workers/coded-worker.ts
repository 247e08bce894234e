// A worker for worker-errors.test.ts: each handler fails the way a real engine worker can.
import { readFileSync } from "node:fs";
import { serveWorkerHandlers, WorkerError } from "../../services/lib/workers/worker-rpc.ts";

const handlers = {
  missing(): never {
    throw new WorkerError("not_found", "checkpoint folder /nowhere does not exist");
  },
  unreadable(): string {
    return readFileSync("/nonexistent/ddpo-worker-test-file", "utf8");
  },
  bug(): never {
    throw new TypeError("does not exist in the message, but a bug all the same");
  },
  ok(args: { x: number }): number {
    return args.x * 2;
  },
};

export type CodedWorkerHandlers = typeof handlers;

serveWorkerHandlers(handlers);
