// safetensors: byte-exact agreement with the reference writer, bit-identical round trips, dtype
// conversions, and a specific refusal for each way a file can be broken.
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  encodeSafetensors,
  floatToBfloat16Bits,
  floatToHalfBits,
  halfBitsToFloat,
  readSafetensors,
  SafetensorsError,
  SafetensorsReader,
  writeSafetensors,
} from "../../services/lib/checkpoints/safetensors.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const UNET = join(FIXTURES, "unet_tiny", "diffusion_pytorch_model.safetensors");
const CLIP = join(FIXTURES, "clip_text_tiny", "model.safetensors");
const CLIP_IO = join(FIXTURES, "clip_text_tiny", "io.safetensors");

const dir = mkdtempSync(join(tmpdir(), "safetensors-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** A file from a header (object or literal text) and data bytes; `length` overrides N. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), length?: bigint): Uint8Array {
  let json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  if (json.length % 8 !== 0) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)]);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function f32Bytes(...xs: number[]): Uint8Array {
  return bytesOf(new Float32Array(xs));
}

/** Runs `f`, expects a SafetensorsError, and returns it. */
function refusal(f: () => unknown): SafetensorsError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SafetensorsError);
    return err as SafetensorsError;
  }
  throw new Error("expected a SafetensorsError, got none");
}

describe("format", () => {
  test("matches the reference writer byte for byte (safetensors' own test vectors)", () => {
    const out = encodeSafetensors({ "attn.0": { shape: [1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) } });
    const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(header.length).toBe(64);
    expect(Array.from(out.subarray(0, 8))).toEqual([64, 0, 0, 0, 0, 0, 0, 0]);
    expect(Buffer.from(out.subarray(8, 72)).toString()).toBe(header);
    expect(Array.from(out.subarray(72))).toEqual(Array.from(f32Bytes(0, 1, 2, 3, 4, 5)));

    // An odd-length header is padded with spaces so the data starts 8-aligned.
    const padded = encodeSafetensors({ attn0: { shape: [1, 1, 2, 3], data: new Float32Array(6) } });
    expect(padded[0]).toBe(72);
    expect(Buffer.from(padded.subarray(8, 80)).toString()).toBe(
      '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       ',
    );

    expect(Array.from(encodeSafetensors({}))).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    const withMeta = encodeSafetensors({}, { framework: "pt" });
    expect(withMeta[0]).toBe(40);
    expect(Buffer.from(withMeta.subarray(8)).toString()).toBe('{"__metadata__":{"framework":"pt"}}     ');
  });

  test("rewriting the PyTorch fixtures reproduces them byte for byte", () => {
    for (const path of [UNET, CLIP]) {
      const original = new Uint8Array(readFileSync(path));
      const { tensors, metadata } = readSafetensors(path);
      expect(metadata).toEqual({ format: "pt" });
      const out = join(dir, "rewrite.safetensors");
      const hash = writeSafetensors(out, tensors, metadata);
      const written = new Uint8Array(readFileSync(out));
      expect(written.byteLength).toBe(original.byteLength);
      expect(Buffer.compare(written, original)).toBe(0);
      expect(hash).toBe(sha256(original));
    }
  });

  test("reads the fixtures: names, shapes and values", () => {
    const unet = readSafetensors(UNET).tensors;
    expect(unet.size).toBe(324);
    const convIn = unet.get("conv_in.weight")!;
    expect(convIn.dtype).toBe("F32");
    expect(convIn.shape).toEqual([16, 3, 3, 3]);
    expect(convIn.data).toBeInstanceOf(Float32Array);
    expect(convIn.data.length).toBe(16 * 27);

    const io = readSafetensors(CLIP_IO);
    expect(io.metadata.loss).toBe("sum(last_hidden_state * probe)");
    expect(io.tensors.get("input_ids")!.shape).toEqual([2, 16]);
    // input_ids are stored as float; int32() converts them because they are whole numbers.
    using reader = SafetensorsReader.open(CLIP_IO);
    const ids = reader.int32("input_ids");
    expect(ids).toBeInstanceOf(Int32Array);
    expect(Array.from(ids)).toEqual(Array.from(reader.float32("input_ids")));
    expect(() => reader.int32("probe")).toThrow(/element 0 = .* of F32 is not a 32-bit integer/);
  });

  test("round trip is bit-identical, including NaN payloads, -0, subnormals and int32 extremes", () => {
    const special = new Uint32Array([
      0x7fc00001, 0xffffffff, 0x80000000, 0x00000001, 0x7f800000, 0xff800000, 0x3f800000,
    ]);
    const floats = new Float32Array(1000);
    for (let i = 0; i < floats.length; i++) floats[i] = (Math.random() - 0.5) * 10 ** ((i % 20) - 10);
    floats.set(new Float32Array(special.buffer));
    const ints = new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, -1, 42]);
    const tensors = new Map<string, { shape: number[]; data: Float32Array | Int32Array }>([
      ["z.floats", { shape: [10, 100], data: floats }],
      ["a.ints", { shape: [5], data: ints }],
      ["scalar", { shape: [], data: new Float32Array([3.5]) }],
      ["empty", { shape: [0, 3], data: new Float32Array(0) }],
      ["ünïcode.名前", { shape: [2], data: new Float32Array([1, 2]) }],
    ]);
    const path = join(dir, "roundtrip.safetensors");
    const hash = writeSafetensors(path, tensors, { step: "7", note: "ok" });
    const file = new Uint8Array(readFileSync(path));
    expect(hash).toBe(sha256(file));
    expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);

    const n = Number(new DataView(file.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(Buffer.from(file.subarray(8, 8 + n)).toString());
    // Metadata first, then by dtype (F32 before I32, as the reference writer does), then by name.
    expect(Object.keys(header)).toEqual(["__metadata__", "empty", "scalar", "z.floats", "ünïcode.名前", "a.ints"]);
    expect(header.__metadata__).toEqual({ note: "ok", step: "7" });

    const back = readSafetensors(path);
    expect(back.metadata).toEqual({ note: "ok", step: "7" });
    for (const [name, t] of tensors) {
      const got = back.tensors.get(name)!;
      expect(got.shape).toEqual(t.shape);
      expect(got.data.constructor).toBe(t.data.constructor);
      expect(Buffer.compare(bytesOf(got.data), bytesOf(t.data))).toBe(0);
    }
    // The same from memory.
    const mem = readSafetensors(file);
    expect(Buffer.compare(bytesOf(mem.tensors.get("z.floats")!.data), bytesOf(floats))).toBe(0);
  });

  test("mixed dtypes are ordered widest first, so every tensor stays aligned", () => {
    const file = encodeSafetensors({
      h: { shape: [3], data: new Float32Array([1, 2, 3]), dtype: "F16" },
      b: { shape: [1], data: new Float32Array([1]), dtype: "BF16" },
      i: { shape: [1], data: new Int32Array([5]) },
      f: { shape: [1], data: new Float32Array([1]) },
    });
    using reader = SafetensorsReader.open(file);
    const order = [...reader.tensors.values()].sort((x, y) => x.dataOffsets[0] - y.dataOffsets[0]).map((t) => t.name);
    expect(order).toEqual(["f", "i", "b", "h"]);
    for (const t of reader.tensors.values()) expect(t.dataOffsets[0] % 2).toBe(0);
    expect(Array.from(reader.float32("h"))).toEqual([1, 2, 3]);
    expect(reader.read("i").data).toEqual(new Int32Array([5]));
  });

  test("the lazy reader reads one tensor at a time and names unknown tensors", () => {
    using reader = SafetensorsReader.open(UNET);
    expect(reader.names.length).toBe(324);
    expect(reader.info("conv_out.bias").shape).toEqual([3]);
    expect(reader.float32("conv_out.bias").length).toBe(3);
    expect(() => reader.info("nope")).toThrow(`${UNET}: tensor 'nope': no such tensor in the file`);
  });
});

describe("dtype conversions", () => {
  test("every half converts to float32 and back exactly; midpoints round to even", () => {
    for (let h = 0; h < 0x10000; h++) {
      const f = halfBitsToFloat(h);
      if (Number.isNaN(f)) continue;
      expect(floatToHalfBits(f)).toBe(h);
      if ((h & 0x7fff) < 0x7bff) {
        // The float32 midpoint to the next half (away from zero) ties to the even neighbour.
        const mid = (f + halfBitsToFloat(h + 1)) / 2;
        if (Math.fround(mid) === mid) expect(floatToHalfBits(mid)).toBe(h & 1 ? h + 1 : h);
      }
    }
    expect(floatToHalfBits(Number.NaN) & 0x7e00).toBe(0x7e00);
    expect(floatToHalfBits(1e-9)).toBe(0);
    expect(floatToHalfBits(70000)).toBe(0x7c00);
  });

  test("bfloat16 rounds to nearest even and keeps NaN", () => {
    expect(floatToBfloat16Bits(1)).toBe(0x3f80);
    expect(floatToBfloat16Bits(-2)).toBe(0xc000);
    const tie = new Float32Array(new Uint32Array([0x3f808000]).buffer)[0]!; // halfway: rounds down to even
    expect(floatToBfloat16Bits(tie)).toBe(0x3f80);
    const above = new Float32Array(new Uint32Array([0x3f808001]).buffer)[0]!;
    expect(floatToBfloat16Bits(above)).toBe(0x3f81);
    expect(floatToBfloat16Bits(Number.NaN) & 0x7fc0).toBe(0x7fc0);
  });

  test("F16/BF16 writes round and read back; finite overflow is refused", () => {
    const data = new Float32Array([0, -0, 1, -2.5, 65504, 1 / 3, 1e-7]);
    const back = readSafetensors(
      encodeSafetensors({ h: { shape: [7], data, dtype: "F16" }, b: { shape: [7], data, dtype: "BF16" } }),
    ).tensors;
    const h = back.get("h")!.data;
    expect(Array.from(h.subarray(0, 5))).toEqual([0, -0, 1, -2.5, 65504]);
    expect(Math.abs(h[5]! - 1 / 3)).toBeLessThan(2 ** -12);
    expect(Math.abs(back.get("b")!.data[5]! - 1 / 3)).toBeLessThan(2 ** -8);
    expect(() => encodeSafetensors({ x: { shape: [1], data: new Float32Array([1e5]), dtype: "F16" } })).toThrow(
      /element 0 = 100000 overflows F16/,
    );
  });

  test("F64, I64, I16, U8 and BOOL read with range checks", () => {
    const f64 = bytesOf(new Float64Array([1.5, -2, 1e-300]));
    const i64 = bytesOf(new BigInt64Array([1n, -5n, 2n ** 31n - 1n]));
    const i16 = bytesOf(new Int16Array([-300, 7]));
    const u8 = new Uint8Array([255, 0]);
    const bool = new Uint8Array([1, 0]);
    const data = new Uint8Array([...f64, ...i64, ...i16, ...u8, ...bool]);
    let at = 0;
    const span = (n: number) => {
      at += n;
      return [at - n, at];
    };
    const file = rawFile(
      {
        f64: { dtype: "F64", shape: [3], data_offsets: span(24) },
        i64: { dtype: "I64", shape: [3], data_offsets: span(24) },
        i16: { dtype: "I16", shape: [2], data_offsets: span(4) },
        u8: { dtype: "U8", shape: [2], data_offsets: span(2) },
        bool: { dtype: "BOOL", shape: [2], data_offsets: span(2) },
      },
      data,
    );
    using r = SafetensorsReader.open(file, { label: "mixed.safetensors" });
    expect(Array.from(r.float32("f64"))).toEqual([1.5, -2, Math.fround(1e-300)]);
    expect(r.read("f64").data).toBeInstanceOf(Float32Array);
    expect(r.read("i64").data).toEqual(new Int32Array([1, -5, 2 ** 31 - 1]));
    expect(r.read("i16").data).toEqual(new Int32Array([-300, 7]));
    expect(r.read("u8").data).toEqual(new Int32Array([255, 0]));
    expect(r.read("bool").data).toEqual(new Int32Array([1, 0]));
    expect(Array.from(r.float32("i16"))).toEqual([-300, 7]);
    expect(() => r.float32("i64")).toThrow(
      "mixed.safetensors: tensor 'i64': element 2 = 2147483647 of I64 is not exactly representable in float32",
    );

    const big = rawFile(
      { i: { dtype: "I64", shape: [1], data_offsets: [0, 8] } },
      bytesOf(new BigInt64Array([2n ** 40n])),
    );
    expect(refusal(() => readSafetensors(big)).message).toContain("element 0 = 1099511627776 of I64 is out of range");
    const huge = rawFile({ d: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, bytesOf(new Float64Array([1e300])));
    expect(refusal(() => readSafetensors(huge)).message).toContain("overflows float32");
    const badBool = rawFile({ b: { dtype: "BOOL", shape: [1], data_offsets: [0, 1] } }, new Uint8Array([2]));
    expect(refusal(() => readSafetensors(badBool)).message).toContain("out of range for a bool");
  });
});

describe("refuses broken files", () => {
  const good = encodeSafetensors({
    a: { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    b: { shape: [4], data: new Float32Array([7, 8, 9, 10]) },
  });
  const headerLen = Number(new DataView(good.buffer).getBigUint64(0, true));
  const two = (aOff: number[], bOff: number[], extra: Record<string, unknown> = {}) => ({
    a: { dtype: "F32", shape: [2, 3], data_offsets: aOff },
    b: { dtype: "F32", shape: [4], data_offsets: bOff },
    ...extra,
  });
  const data40 = new Uint8Array(40);

  test("the good file reads", () => {
    expect(readSafetensors(good).tensors.size).toBe(2);
    expect(readSafetensors(rawFile(two([0, 24], [24, 40]), data40)).tensors.size).toBe(2);
  });

  test("truncated at several points", () => {
    const cases: [number, RegExp][] = [
      [0, /file is 0 bytes, too short for the 8-byte header length/],
      [5, /file is 5 bytes, too short/],
      [8, /header length \d+ runs past the end of the file \(8 bytes\)/],
      [8 + Math.floor(headerLen / 2), /runs past the end of the file/],
      [8 + headerLen, /tensor 'b': data_offsets \[24, 40\] run past the end of the data buffer \(0 bytes\)/],
      [8 + headerLen + 30, /tensor 'b': .*run past the end of the data buffer \(30 bytes\)/],
      [good.length - 1, /run past the end of the data buffer \(39 bytes\): the file is truncated/],
    ];
    for (const [cut, message] of cases) {
      const path = join(dir, `truncated-${cut}.safetensors`);
      writeFileSync(path, good.subarray(0, cut));
      const err = refusal(() => readSafetensors(path));
      expect(err.file).toBe(path);
      expect(err.message.startsWith(`${path}: `)).toBe(true);
      expect(err.message).toMatch(message);
    }
  });

  test("header length larger than the file, and huge", () => {
    const longer = good.slice();
    new DataView(longer.buffer).setBigUint64(0, BigInt(good.length), true);
    expect(refusal(() => readSafetensors(longer)).message).toMatch(
      new RegExp(`header length ${good.length} runs past the end of the file \\(${good.length} bytes\\)`),
    );
    for (const n of [2n ** 40n, 2n ** 64n - 1n, 100_000_001n]) {
      const huge = good.slice();
      new DataView(huge.buffer).setBigUint64(0, n, true);
      expect(refusal(() => readSafetensors(huge)).message).toContain(
        `header length ${n} exceeds the 100000000-byte cap`,
      );
    }
  });

  test("header that is not JSON, not UTF-8, or not an object", () => {
    expect(refusal(() => readSafetensors(rawFile('{"a": {"dtype": ', data40))).message).toMatch(
      /header is not valid JSON/,
    );
    expect(refusal(() => readSafetensors(rawFile("[1, 2]"))).message).toMatch(/header does not start with '\{'/);
    const notUtf8 = rawFile("{}      ");
    notUtf8[10] = 0xff;
    expect(refusal(() => readSafetensors(notUtf8)).message).toMatch(/header is not valid UTF-8/);
    expect(refusal(() => readSafetensors(rawFile({ a: 5 }))).message).toBe(
      "<safetensors bytes>: tensor 'a': entry is not an object: 5",
    );
  });

  test("wrong dtype", () => {
    const bad = { ...two([0, 24], [24, 40]), b: { dtype: "F33", shape: [4], data_offsets: [24, 40] } };
    const e = refusal(() => readSafetensors(rawFile(bad, data40), { label: "bad.safetensors" }));
    expect(e.tensor).toBe("b");
    expect(e.message).toMatch(/^bad\.safetensors: tensor 'b': unknown dtype "F33" \(known: BOOL, .*F32.*\)/);
  });

  test("overlapping offsets", () => {
    const e = refusal(() => readSafetensors(rawFile(two([0, 24], [16, 32]), new Uint8Array(32))));
    expect(e.message).toMatch(/tensor 'b': data_offsets \[16, 32\] overlap tensor 'a' at \[0, 24\]/);
  });

  test("offsets beyond the end", () => {
    const e = refusal(() => readSafetensors(rawFile(two([0, 24], [24, 40]), new Uint8Array(32))));
    expect(e.message).toMatch(/tensor 'b': data_offsets \[24, 40\] run past the end of the data buffer \(32 bytes\)/);
  });

  test("shape not matching the offsets", () => {
    const bad = { ...two([0, 24], [24, 40]), b: { dtype: "F32", shape: [5], data_offsets: [24, 40] } };
    const e = refusal(() => readSafetensors(rawFile(bad, data40)));
    expect(e.message).toMatch(/tensor 'b': shape \[5\] of F32 needs 20 bytes but data_offsets \[24, 40\] span 16/);
  });

  test("a hole in the buffer, a gap at the start, and trailing bytes", () => {
    const hole = refusal(() => readSafetensors(rawFile(two([0, 24], [28, 44]), new Uint8Array(44))));
    expect(hole.message).toMatch(/tensor 'b': bytes \[24, 28\) .* not covered by any tensor \(a hole after 'a'\)/);
    const start = refusal(() => readSafetensors(rawFile(two([4, 28], [28, 44]), new Uint8Array(44))));
    expect(start.message).toMatch(/tensor 'a': bytes \[0, 4\) .* \(a hole at the start\)/);
    const trailing = refusal(() => readSafetensors(rawFile(two([0, 24], [24, 40]), new Uint8Array(44))));
    expect(trailing.message).toMatch(/the last 4 bytes of the data buffer \(44 bytes\) are not covered by any tensor/);
  });

  test("malformed offsets, shapes and metadata", () => {
    for (const offs of [[24, 8], [-8, 24], [0], [0, 24.5], "0,24"]) {
      const bad = { a: { dtype: "F32", shape: [2, 3], data_offsets: offs } };
      expect(refusal(() => readSafetensors(rawFile(bad, new Uint8Array(24)))).message).toMatch(
        /tensor 'a': data_offsets must be \[begin, end\] with 0 <= begin <= end/,
      );
    }
    for (const shape of [[-1, 3], [2.5], "6", [2, null]]) {
      const bad = { a: { dtype: "F32", shape, data_offsets: [0, 24] } };
      expect(refusal(() => readSafetensors(rawFile(bad, new Uint8Array(24)))).message).toMatch(
        /tensor 'a': shape must be an array of non-negative integers/,
      );
    }
    const meta = rawFile({ __metadata__: { format: "pt", step: 3 } });
    expect(refusal(() => readSafetensors(meta)).message).toMatch(/__metadata__ value for 'step' is not a string: 3/);
    expect(refusal(() => readSafetensors(rawFile({ __metadata__: ["x"] }))).message).toMatch(
      /__metadata__ must be an object of strings/,
    );
    expect(readSafetensors(rawFile({ __metadata__: null })).metadata).toEqual({});
    const overflow = { a: { dtype: "F64", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 0] } };
    expect(refusal(() => readSafetensors(rawFile(overflow))).message).toMatch(/shape \[.*\] is too large/);
  });

  test("a missing file", () => {
    const path = join(dir, "absent.safetensors");
    expect(refusal(() => readSafetensors(path)).message).toMatch(new RegExp(`^${path}: cannot open: `));
    expect(refusal(() => readSafetensors(dir)).message).toMatch(new RegExp(`^${dir}: cannot (open|read): `));
  });
});

describe("the writer refuses bad input", () => {
  test("shape/data mismatch, reserved name, dtype mismatch, non-string metadata", () => {
    expect(() => encodeSafetensors({ a: { shape: [2, 2], data: new Float32Array(3) } })).toThrow(
      "tensor 'a': shape [2, 2] holds 4 elements, data has 3",
    );
    expect(() => encodeSafetensors({ __metadata__: { shape: [1], data: new Float32Array(1) } })).toThrow(/reserved/);
    expect(() => encodeSafetensors({ a: { shape: [1], data: new Int32Array(1), dtype: "F16" } })).toThrow(
      "tensor 'a': dtype F16 does not match its Int32Array",
    );
    expect(() => encodeSafetensors({ a: { shape: [-1], data: new Float32Array(1) } })).toThrow(/shape must be/);
    expect(() => encodeSafetensors({ a: { shape: [1], data: new Int32Array(1), dtype: "I64" } })).toThrow(
      "tensor 'a': writing I64 is not supported (writable: F32, F16, BF16, I32)",
    );
    expect(() => encodeSafetensors({}, { step: 3 as unknown as string })).toThrow(
      "metadata value for 'step' must be a string, got 3",
    );
  });

  test("overwrites atomically and leaves no temporary files", () => {
    const path = join(dir, "atomic.safetensors");
    writeSafetensors(path, { a: { shape: [1], data: new Float32Array([1]) } });
    writeSafetensors(path, { a: { shape: [2], data: new Float32Array([2, 3]) } });
    expect(Array.from(readSafetensors(path).tensors.get("a")!.data)).toEqual([2, 3]);
    expect(readdirSync(dir).filter((f) => f.startsWith(".atomic"))).toEqual([]);
    // A failed write (bad input) leaves the old file in place.
    expect(() => writeSafetensors(path, { a: { shape: [3], data: new Float32Array(2) } })).toThrow();
    expect(Array.from(readSafetensors(path).tensors.get("a")!.data)).toEqual([2, 3]);
  });
});
