// Philox-4x32-10 normals: an independent TypeScript implementation (Random123's known answers)
// predicts the engine's noise element by element; the stream is seekable and well distributed.
import { afterAll, describe, expect, test } from "bun:test";
import { Engine } from "../../gpu-core/index.ts";

const engine = Engine.open();
afterAll(() => engine.close());

function mulhilo(a: number, b: number): [number, number] {
  const p = BigInt(a) * BigInt(b);
  return [Number(p >> 32n), Number(p & 0xffffffffn)];
}

function philox4x32_10(ctr: number[], key: number[]): number[] {
  let [c0, c1, c2, c3] = ctr as [number, number, number, number];
  let [k0, k1] = key as [number, number];
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo(0xd2511f53, c0);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Normal number `index` of stream `seed`, per core/philox.h. */
function philoxNormal(seed: bigint, index: bigint): number {
  const pair = index >> 1n;
  const w = philox4x32_10(
    [Number(pair & 0xffffffffn), Number(pair >> 32n), 0, 0],
    [Number(seed & 0xffffffffn), Number((seed >> 32n) & 0xffffffffn)],
  );
  const top53 = (hi: number, lo: number) => Number(((BigInt(hi) << 32n) | BigInt(lo)) >> 11n);
  const u1 = (top53(w[0]!, w[1]!) + 1) * 2 ** -53;
  const u2 = top53(w[2]!, w[3]!) * 2 ** -53;
  const r = Math.sqrt(-2 * Math.log(u1));
  return index & 1n ? r * Math.sin(2 * Math.PI * u2) : r * Math.cos(2 * Math.PI * u2);
}

describe("philox", () => {
  test("the reference matches Random123's known-answer vectors", () => {
    expect(philox4x32_10([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    expect(philox4x32_10([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])).toEqual([
      0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd,
    ]);
    expect(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])).toEqual([
      0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
    ]);
  });

  test("engine noise equals the reference element by element", () => {
    for (const [seed, offset] of [
      [0n, 0n],
      [42n, 7n],
      [0xdeadbeefcafen, 123456789n],
      [2n ** 64n - 1n, 2n ** 33n + 1n],
    ] as const) {
      const t = engine.tensor([257]);
      engine.randn(t, seed, offset);
      const got = t.read();
      for (let i = 0; i < 257; i++) {
        expect(got[i]!).toBe(Math.fround(philoxNormal(seed, offset + BigInt(i))));
      }
      t.close();
    }
  });

  test("seekable: an offset continues the same stream", () => {
    const a = engine.tensor([100]);
    const b = engine.tensor([60]);
    engine.randn(a, 9, 0);
    engine.randn(b, 9, 40);
    expect(b.read()).toEqual(a.read().subarray(40));
    engine.randn(b, 10, 40);
    expect(b.read()).not.toEqual(a.read().subarray(40));
    a.close();
    b.close();
  });

  test("moments of 2^20 draws", () => {
    const n = 1 << 20;
    const t = engine.tensor([n]);
    engine.randn(t, BigInt(Date.now()), 0);
    const x = t.read();
    let s1 = 0;
    let s2 = 0;
    let s4 = 0;
    for (const v of x) {
      s1 += v;
      s2 += v * v;
      s4 += v ** 4;
    }
    const mean = s1 / n;
    const variance = s2 / n - mean * mean;
    // Standard errors: mean 1/sqrt(n) ~ 1e-3, variance sqrt(2/n) ~ 1.4e-3, kurtosis ~ 5e-3.
    expect(Math.abs(mean)).toBeLessThan(6e-3);
    expect(Math.abs(variance - 1)).toBeLessThan(8e-3);
    expect(Math.abs(s4 / n - 3)).toBeLessThan(0.05);
    t.close();
  });
});
