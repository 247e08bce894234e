// FFI lifetime: typed arrays passed by value (never cached pointers) survive GC moves; tensors
// dropped without close() are reclaimed by the finalizer; handles stay valid across collections.
import { afterAll, expect, test } from "bun:test";
import { Engine } from "../../gpu-core/index.ts";

const engine = Engine.open();
afterAll(() => engine.close());

test("round trips survive Bun.gc(true) between calls", () => {
  for (let round = 0; round < 50; round++) {
    const n = 1 + ((round * 37) % 300);
    const data = Float32Array.from({ length: n }, (_, i) => i * 0.5 + round);
    const t = engine.fromArray(data, [n]);
    Bun.gc(true);
    // Small arrays may move during GC: allocate garbage to encourage it.
    const junk = Array.from({ length: 1000 }, (_, i) => new Float32Array((i % 7) + 1));
    Bun.gc(true);
    const back = t.read();
    expect(back).toEqual(data);
    const y = engine.tensor([n]);
    engine.axpby(y, 1, t, 0);
    Bun.gc(true);
    expect(y.read()).toEqual(data);
    t.close();
    y.close();
    expect(junk.length).toBe(1000);
  }
});

test("tensors dropped without close() are freed by the finalizer", async () => {
  const before = engine.memory().inUse;
  (() => {
    for (let i = 0; i < 200; i++) engine.zeros([1024]);
  })();
  for (let i = 0; i < 10 && engine.memory().inUse > before; i++) {
    Bun.gc(true);
    await Bun.sleep(10);
  }
  expect(engine.memory().inUse).toBe(before);
});

test("views keep their storage alive after the parent is closed", () => {
  const parent = engine.fromArray([1, 2, 3, 4, 5, 6], [6]);
  const view = parent.view(2, [2, 2]);
  parent.close();
  Bun.gc(true);
  expect(Array.from(view.read())).toEqual([3, 4, 5, 6]);
  view.close();
});
