// Worker side of worker.test.ts: opens its own engine, computes, and reports an error message.
import { Engine, GpuCoreError } from "../../gpu-core/index.ts";

declare const self: Worker;

self.onmessage = (e: MessageEvent<{ n: number }>) => {
  const engine = Engine.open();
  const n = e.data.n;
  const x = engine.fromArray(
    Array.from({ length: n }, (_, i) => i),
    [1, n],
  );
  const w = engine.fromArray(new Array(n).fill(1), [1, n]);
  const y = engine.tensor([1, 1]);
  engine.linearForward(y, x, w, null);
  let error = "";
  try {
    engine.conv2dForward(y, x, w, null, 1, 0);
  } catch (err) {
    error = err instanceof GpuCoreError ? err.message : String(err);
  }
  self.postMessage({ sum: y.read()[0], error, backend: engine.backend });
  engine.close();
};
