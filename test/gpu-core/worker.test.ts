// The binding works inside a Bun Worker (services run the engine off the event loop), and errors
// raised there carry the C message of that thread.
import { expect, test } from "bun:test";

test("gpu-core runs inside a Bun Worker", async () => {
  const worker = new Worker(new URL("./worker-fixture.ts", import.meta.url).href);
  const reply = await new Promise<{ sum: number; error: string; backend: string }>((resolve, reject) => {
    worker.onmessage = (e) => resolve(e.data);
    worker.onerror = (e) => reject(e);
    worker.postMessage({ n: 1000 });
  });
  worker.terminate();
  expect(reply.backend).toBe("cpu");
  expect(reply.sum).toBe((999 * 1000) / 2);
  expect(reply.error).toMatch(/gc_conv2d_forward: x must be 4-D/);
});
