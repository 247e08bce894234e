// Graph's gradient bookkeeping: ops whose input gradient is the output gradient itself (add,
// reshape) hand on handles to one storage; a gradient that shares its storage, or the caller's
// seed, must never be summed into in place. A small graph where every tensor is reused checks
// the gradient against the formula worked by hand, and that the seed comes back untouched.
import { afterAll, expect, test } from "bun:test";
import { Engine, type Tensor } from "../../gpu-core/index.ts";
import { Graph, type ParameterSlot } from "../../services/lib/models/graph.ts";

const engine = Engine.open();
afterAll(() => engine.close());

test("reused tensors through add and reshape get the hand-worked gradient; the seed is left as it was", () => {
  const [N, D] = [4, 6];
  const w = Float32Array.from({ length: D * D }, (_, i) => Math.sin(0.37 * i + 0.1));
  const params = new Map<string, ParameterSlot>([["l.weight", { value: engine.fromArray(w, [D, D]), grad: null }]]);
  const arena = engine.arena();
  const g = new Graph(engine, { lookup: (name) => params.get(name) }, arena);
  const xHost = Float32Array.from({ length: N * D }, (_, i) => Math.cos(0.23 * i));
  const x = g.requireGrad(engine.fromArray(xHost, [N, D], { arena }));
  // out = t + s with u = x W^T, s = u + x, t = s + u (through a reshape round trip):
  // out = 3 u + 2 x, so dL/dx = 3 probe W + 2 probe for L = sum(out * probe).
  const u = g.linear(x, "l", D, false);
  const s = g.add(u, x);
  const t = g.reshape(g.reshape(g.add(s, u), [N * D]), [N, D]);
  const out = g.add(t, s);
  const probeHost = Float32Array.from({ length: N * D }, (_, i) => 1 + 0.5 * Math.sin(1.7 * i));
  const seed: Tensor = engine.fromArray(probeHost, [N, D]);
  g.backward(out, seed);
  const got = g.gradOf(x)!.read();
  let worst = 0;
  for (let n = 0; n < N; n++)
    for (let i = 0; i < D; i++) {
      let want = 2 * probeHost[n * D + i]!;
      for (let o = 0; o < D; o++) want += 3 * probeHost[n * D + o]! * w[o * D + i]!;
      worst = Math.max(worst, Math.abs(got[n * D + i]! - want) / Math.abs(want));
    }
  expect(worst).toBeLessThan(1e-5);
  expect(Buffer.from(seed.read().buffer).equals(Buffer.from(probeHost.buffer))).toBe(true);
  g.dispose();
  seed.close();
  arena.close();
  for (const p of params.values()) p.value.close();
});
