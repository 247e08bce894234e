// The safetensors format (huggingface/safetensors), read and written without dependencies:
//   [u64 little-endian N][N bytes of JSON header, space-padded][data buffer]
// header = {"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets": [begin, end]}}
// with offsets relative to the data buffer, which the tensors must cover exactly (no gaps, no
// overlaps, nothing after the last one). Reading checks all of that before any tensor is handed
// out, and refuses a bad file with an error naming the file and the tensor.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { writeFileAtomic } from "./atomic-file.ts";

/** Bytes per element, in the order of safetensors' Dtype enum (the writer sorts by it). */
export const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDType = keyof typeof DTYPE_SIZES;
export type WritableDType = "F32" | "F16" | "BF16" | "I32";
export const WRITABLE_DTYPES: readonly WritableDType[] = ["F32", "F16", "BF16", "I32"];

const DTYPE_RANK = new Map(Object.keys(DTYPE_SIZES).map((d, i) => [d, i]));
const FLOAT_DTYPES = new Set<SafetensorsDType>(["F16", "BF16", "F32", "F64"]);

/** safetensors' own cap: a bigger header is taken as a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;

export function isSafetensorsDType(s: unknown): s is SafetensorsDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZES, s);
}

export function isFloatDType(d: SafetensorsDType): boolean {
  return FLOAT_DTYPES.has(d);
}

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    readonly detail: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor === undefined ? "" : `tensor '${tensor}': `}${detail}`);
    this.name = "SafetensorsError";
  }
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly numel: number;
  /** [begin, end) in bytes, relative to the start of the data buffer. */
  readonly dataOffsets: readonly [number, number];
}

/** A tensor as the engine holds it: float dtypes as Float32Array, integer and bool as Int32Array. */
export interface LoadedTensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
}

export interface TensorToWrite {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
  /**
   * Defaults to F32 for Float32Array and I32 for Int32Array; F16/BF16 round a Float32Array. Typed
   * as any dtype so tensors read from a file write back as they are; only WRITABLE_DTYPES pass.
   */
  readonly dtype?: SafetensorsDType;
}

export type TensorsToWrite = ReadonlyMap<string, TensorToWrite> | Readonly<Record<string, TensorToWrite>>;

export interface ReadOptions {
  /** How errors name an in-memory source (a path names itself). */
  label?: string;
  maxHeaderBytes?: number;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function requireLittleEndian(): void {
  // Typed arrays use the host byte order and safetensors is little-endian; Bun only runs on LE hosts.
  if (!LITTLE_ENDIAN) throw new Error("safetensors I/O needs a little-endian host");
}

// ---- the header ------------------------------------------------------------------------------

interface ParsedHeader {
  headerBytes: number; // N
  dataLength: number; // bytes after 8 + N
  tensors: Map<string, TensorInfo>; // sorted by name
  metadata: Record<string, string>;
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Validates the JSON header against a data buffer of `dataLength` bytes. */
function parseHeader(file: string, json: Uint8Array, headerBytes: number, dataLength: number): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    throw new SafetensorsError(file, "header is not valid UTF-8");
  }
  if (!text.startsWith("{")) {
    throw new SafetensorsError(file, `header does not start with '{' (starts with ${describe(text.slice(0, 16))})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(file, `header is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(raw)) throw new SafetensorsError(file, "header is not a JSON object");

  const metadata: Record<string, string> = {};
  const infos: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(raw)) {
    if (name === "__metadata__") {
      if (entry === null) continue; // serde's Option::None
      if (!isPlainObject(entry)) throw new SafetensorsError(file, `__metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(file, `__metadata__ value for '${k}' is not a string: ${describe(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    infos.push(parseEntry(file, name, entry));
  }

  // The tensors, ordered by position, must tile [0, dataLength) exactly.
  let last: TensorInfo | undefined;
  for (const t of infos) if (!last || t.dataOffsets[1] > last.dataOffsets[1]) last = t;
  if (last && last.dataOffsets[1] > dataLength) {
    throw new SafetensorsError(
      file,
      `data_offsets [${last.dataOffsets.join(", ")}] run past the end of the data buffer (${dataLength} bytes): ` +
        "the file is truncated or the offsets are wrong",
      last.name,
    );
  }
  const byOffset = [...infos].sort(
    (a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1],
  );
  let covered = 0;
  let prev: TensorInfo | undefined;
  for (const t of byOffset) {
    const [begin, end] = t.dataOffsets;
    if (begin < covered) {
      throw new SafetensorsError(
        file,
        `data_offsets [${begin}, ${end}] overlap tensor '${prev?.name}' at [${prev?.dataOffsets.join(", ")}]`,
        t.name,
      );
    }
    if (begin > covered) {
      throw new SafetensorsError(
        file,
        `bytes [${covered}, ${begin}) of the data buffer before it are not covered by any tensor ` +
          `(a hole${prev ? ` after '${prev.name}'` : " at the start"})`,
        t.name,
      );
    }
    covered = end;
    prev = t;
  }
  if (covered !== dataLength) {
    throw new SafetensorsError(
      file,
      `the last ${dataLength - covered} bytes of the data buffer (${dataLength} bytes) are not covered by any ` +
        `tensor (the tensors end at ${covered}): trailing garbage or a missing tensor`,
    );
  }

  infos.sort((a, b) => compareNames(a.name, b.name));
  return { headerBytes, dataLength, tensors: new Map(infos.map((t) => [t.name, t])), metadata };
}

function parseEntry(file: string, name: string, entry: unknown): TensorInfo {
  if (!isPlainObject(entry)) throw new SafetensorsError(file, `entry is not an object: ${describe(entry)}`, name);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isSafetensorsDType(dtype)) {
    throw new SafetensorsError(
      file,
      `unknown dtype ${describe(dtype)} (known: ${Object.keys(DTYPE_SIZES).join(", ")})`,
      name,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isIndex)) {
    throw new SafetensorsError(file, `shape must be an array of non-negative integers, got ${describe(shape)}`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex) || offsets[0]! > offsets[1]!) {
    throw new SafetensorsError(
      file,
      `data_offsets must be [begin, end] with 0 <= begin <= end, got ${describe(offsets)}`,
      name,
    );
  }
  let numel = 1;
  for (const d of shape) numel *= d;
  const bytes = numel * DTYPE_SIZES[dtype];
  if (!Number.isSafeInteger(bytes)) throw new SafetensorsError(file, `shape [${shape.join(", ")}] is too large`, name);
  const [begin, end] = offsets as [number, number];
  if (end - begin !== bytes) {
    throw new SafetensorsError(
      file,
      `shape [${shape.join(", ")}] of ${dtype} needs ${bytes} bytes but data_offsets [${begin}, ${end}] ` +
        `span ${end - begin}`,
      name,
    );
  }
  return { name, dtype, shape: [...shape], numel, dataOffsets: [begin, end] };
}

/** Byte-wise UTF-8 order, as Rust sorts String (differs from UTF-16 order only for astral chars). */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

// ---- the reader ------------------------------------------------------------------------------

interface ByteSource {
  size: number;
  /** Fresh, exclusively owned bytes [position, position + length). */
  read(position: number, length: number): Uint8Array;
  close(): void;
}

function memorySource(bytes: Uint8Array): ByteSource {
  return { size: bytes.byteLength, read: (p, n) => bytes.slice(p, p + n), close() {} };
}

function fileSource(path: string): ByteSource {
  const fd = openSync(path, "r");
  let open = true;
  return {
    size: fstatSync(fd).size,
    read(position, length) {
      if (!open) throw new SafetensorsError(path, "reader is closed");
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        let n: number;
        try {
          n = readSync(fd, out, done, length - done, position + done);
        } catch (err) {
          throw new SafetensorsError(path, `cannot read: ${(err as Error).message}`);
        }
        if (n === 0) throw new SafetensorsError(path, `file ended at byte ${position + done} (changed while reading?)`);
        done += n;
      }
      return out;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/**
 * A validated safetensors file whose tensors are read one at a time (only the header is parsed
 * on open). Close it when done; `using` works too.
 */
export class SafetensorsReader implements Disposable {
  readonly #source: ByteSource;
  readonly #header: ParsedHeader;

  private constructor(
    readonly file: string,
    source: ByteSource,
    header: ParsedHeader,
  ) {
    this.#source = source;
    this.#header = header;
  }

  static open(source: string | Uint8Array, opts: ReadOptions = {}): SafetensorsReader {
    requireLittleEndian();
    const file = typeof source === "string" ? source : (opts.label ?? "<safetensors bytes>");
    let bytes: ByteSource;
    try {
      bytes = typeof source === "string" ? fileSource(source) : memorySource(source);
    } catch (err) {
      throw new SafetensorsError(file, `cannot open: ${(err as Error).message}`);
    }
    try {
      const header = readHeader(file, bytes, opts.maxHeaderBytes ?? MAX_HEADER_BYTES);
      return new SafetensorsReader(file, bytes, header);
    } catch (err) {
      bytes.close();
      throw err;
    }
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.#header.metadata;
  }

  /** Tensor descriptions, sorted by name. */
  get tensors(): ReadonlyMap<string, TensorInfo> {
    return this.#header.tensors;
  }

  get names(): string[] {
    return [...this.#header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.#header.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.#header.tensors.get(name);
    if (!t) throw new SafetensorsError(this.file, "no such tensor in the file", name);
    return t;
  }

  /** The tensor's raw little-endian bytes (a fresh copy, aligned for any typed-array view). */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    const [begin, end] = t.dataOffsets;
    return this.#source.read(8 + this.#header.headerBytes + begin, end - begin);
  }

  /** Float dtypes and exactly representable integers as Float32Array; anything lossy beyond rounding is refused. */
  float32(name: string): Float32Array {
    return toFloat32(this.file, this.info(name), this.bytes(name));
  }

  /** Integer and bool dtypes (range-checked), or floats that hold whole numbers, as Int32Array. */
  int32(name: string): Int32Array {
    return toInt32(this.file, this.info(name), this.bytes(name));
  }

  /** Float dtypes as Float32Array, integer and bool dtypes as Int32Array. */
  read(name: string): LoadedTensor {
    const t = this.info(name);
    const data = isFloatDType(t.dtype) || t.dtype.startsWith("F8") ? this.float32(name) : this.int32(name);
    return { dtype: t.dtype, shape: t.shape, data };
  }

  close(): void {
    this.#source.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function readHeader(file: string, source: ByteSource, maxHeaderBytes: number): ParsedHeader {
  if (source.size < 8) {
    throw new SafetensorsError(file, `file is ${source.size} bytes, too short for the 8-byte header length`);
  }
  const n = new DataView(source.read(0, 8).buffer).getBigUint64(0, true);
  if (n > BigInt(maxHeaderBytes)) {
    throw new SafetensorsError(
      file,
      `header length ${n} exceeds the ${maxHeaderBytes}-byte cap (not a safetensors file?)`,
    );
  }
  const headerBytes = Number(n);
  if (8 + headerBytes > source.size) {
    throw new SafetensorsError(
      file,
      `header length ${headerBytes} runs past the end of the file (${source.size} bytes): truncated or not a safetensors file`,
    );
  }
  const json = source.read(8, headerBytes);
  return parseHeader(file, json, headerBytes, source.size - 8 - headerBytes);
}

/** Reads and validates the whole file; every tensor is converted as SafetensorsReader.read does. */
export function readSafetensors(
  source: string | Uint8Array,
  opts: ReadOptions = {},
): { tensors: Map<string, LoadedTensor>; metadata: Record<string, string> } {
  const reader = SafetensorsReader.open(source, opts);
  try {
    const tensors = new Map<string, LoadedTensor>();
    for (const name of reader.names) tensors.set(name, reader.read(name));
    return { tensors, metadata: { ...reader.metadata } };
  } finally {
    reader.close();
  }
}

// ---- element conversions ---------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

let f16Table: Uint32Array | undefined;

/** float32 bit patterns of all 65536 halfs (exact: every half is a float32). */
function halfToFloatBits(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0x1f) {
      table[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf / NaN with its payload
    } else if (exp !== 0) {
      table[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
    } else {
      scratchF32[0] = mant * 2 ** -24; // zero or subnormal: exact in float32
      table[h] = (sign | scratchU32[0]!) >>> 0;
    }
  }
  f16Table = table;
  return table;
}

/** Half bits of a float32, rounded to nearest even; finite overflow gives +-inf (callers check). */
export function floatToHalfBits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // re-biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // a carry rolls into the exponent, as it should
  return sign | half;
}

export function halfBitsToFloat(h: number): number {
  scratchU32[0] = halfToFloatBits()[h & 0xffff]!;
  return scratchF32[0]!;
}

/** bfloat16 bits of a float32, rounded to nearest even (NaN stays NaN). */
export function floatToBfloat16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

function toFloat32(file: string, t: TensorInfo, bytes: Uint8Array): Float32Array {
  const n = t.numel;
  const buf = bytes.buffer;
  switch (t.dtype) {
    case "F32":
      return new Float32Array(buf, bytes.byteOffset, n);
    case "F16": {
      const table = halfToFloatBits();
      const src = new Uint16Array(buf, bytes.byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = table[src[i]!]!;
      return out;
    }
    case "BF16": {
      const src = new Uint16Array(buf, bytes.byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case "F64": {
      const src = new Float64Array(buf, bytes.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const v = src[i]!;
        out[i] = v;
        if (Number.isFinite(v) && !Number.isFinite(out[i]!)) {
          throw new SafetensorsError(file, `element ${i} = ${v} overflows float32`, t.name);
        }
      }
      return out;
    }
    case "F8_E5M2":
    case "F8_E4M3":
      throw new SafetensorsError(file, `dtype ${t.dtype} cannot be converted (not supported)`, t.name);
    default: {
      // Integers: exact in float32 only up to 2^24.
      const out = new Float32Array(n);
      const src = integerView(t, bytes);
      for (let i = 0; i < n; i++) {
        const v = Number(src[i]!);
        if (Math.abs(v) > 2 ** 24) {
          throw new SafetensorsError(
            file,
            `element ${i} = ${src[i]} of ${t.dtype} is not exactly representable in float32`,
            t.name,
          );
        }
        out[i] = v;
      }
      return out;
    }
  }
}

function integerView(
  t: TensorInfo,
  bytes: Uint8Array,
): Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array {
  const { buffer: b, byteOffset: o } = bytes;
  const n = t.numel;
  switch (t.dtype) {
    case "BOOL":
    case "U8":
      return new Uint8Array(b, o, n);
    case "I8":
      return new Int8Array(b, o, n);
    case "I16":
      return new Int16Array(b, o, n);
    case "U16":
      return new Uint16Array(b, o, n);
    case "I32":
      return new Int32Array(b, o, n);
    case "U32":
      return new Uint32Array(b, o, n);
    case "I64":
      return new BigInt64Array(b, o, n);
    case "U64":
      return new BigUint64Array(b, o, n);
    default:
      throw new Error(`${t.dtype} is not an integer dtype`);
  }
}

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;

function toInt32(file: string, t: TensorInfo, bytes: Uint8Array): Int32Array {
  const n = t.numel;
  if (t.dtype === "I32") return new Int32Array(bytes.buffer, bytes.byteOffset, n);
  const out = new Int32Array(n);
  if (isFloatDType(t.dtype) || t.dtype.startsWith("F8")) {
    const src = toFloat32(file, t, bytes);
    for (let i = 0; i < n; i++) {
      const v = src[i]!;
      if (!Number.isInteger(v) || v < I32_MIN || v > I32_MAX) {
        throw new SafetensorsError(file, `element ${i} = ${v} of ${t.dtype} is not a 32-bit integer`, t.name);
      }
      out[i] = v;
    }
    return out;
  }
  const src = integerView(t, bytes);
  for (let i = 0; i < n; i++) {
    const raw = src[i]!;
    const v = typeof raw === "bigint" ? (raw < -(2n ** 31n) || raw > 2n ** 31n - 1n ? Number.NaN : Number(raw)) : raw;
    if (Number.isNaN(v) || v < I32_MIN || v > I32_MAX || (t.dtype === "BOOL" && v > 1)) {
      throw new SafetensorsError(
        file,
        `element ${i} = ${raw} of ${t.dtype} is out of range for ${t.dtype === "BOOL" ? "a bool" : "int32"}`,
        t.name,
      );
    }
    out[i] = v;
  }
  return out;
}

// ---- the writer ------------------------------------------------------------------------------

function entriesOf(tensors: TensorsToWrite): [string, TensorToWrite][] {
  return tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors as Record<string, TensorToWrite>);
}

/** The tensor's bytes in `dtype` (views, not copies, for F32 and I32). */
function encodeTensor(name: string, t: TensorToWrite): { dtype: SafetensorsDType; bytes: Uint8Array } {
  const isFloat = t.data instanceof Float32Array;
  if (!isFloat && !(t.data instanceof Int32Array)) {
    throw new Error(`tensor '${name}': data must be a Float32Array or an Int32Array`);
  }
  const dtype = t.dtype ?? (isFloat ? "F32" : "I32");
  if (!(WRITABLE_DTYPES as readonly string[]).includes(dtype)) {
    throw new Error(`tensor '${name}': writing ${dtype} is not supported (writable: ${WRITABLE_DTYPES.join(", ")})`);
  }
  if ((dtype === "I32") === isFloat) {
    throw new Error(`tensor '${name}': dtype ${dtype} does not match its ${t.data.constructor.name}`);
  }
  const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (dtype === "F32" || dtype === "I32") return { dtype, bytes: view(t.data) };
  const src = t.data as Float32Array;
  const out = new Uint16Array(src.length);
  const encode = dtype === "F16" ? floatToHalfBits : floatToBfloat16Bits;
  const infBits = dtype === "F16" ? 0x7c00 : 0x7f80;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    const bits = encode(v);
    if ((bits & 0x7fff) === infBits && Number.isFinite(v)) {
      throw new Error(`tensor '${name}': element ${i} = ${v} overflows ${dtype}`);
    }
    out[i] = bits;
  }
  return { dtype, bytes: view(out) };
}

/** The 8-byte length, the padded JSON header and the tensor bytes, in file order. */
export function planSafetensors(
  tensors: TensorsToWrite,
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array[] {
  requireLittleEndian();
  const items = entriesOf(tensors).map(([name, t]) => {
    if (name === "__metadata__") throw new Error("'__metadata__' is reserved and cannot name a tensor");
    if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
      throw new Error(`tensor '${name}': shape must be non-negative integers, got ${describe(t.shape)}`);
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw new Error(
        `tensor '${name}': shape [${t.shape.join(", ")}] holds ${numel} elements, data has ${t.data.length}`,
      );
    }
    return { name, shape: [...t.shape], ...encodeTensor(name, t) };
  });
  // As safetensors does: widest dtype first (keeps every tensor aligned to its element size), then by name.
  items.sort((a, b) => DTYPE_RANK.get(b.dtype)! - DTYPE_RANK.get(a.dtype)! || compareNames(a.name, b.name));

  const header: Record<string, unknown> = {};
  const metaKeys = Object.keys(metadata).sort(compareNames);
  if (metaKeys.length > 0) {
    const meta: Record<string, string> = {};
    for (const k of metaKeys) {
      const v = metadata[k];
      if (typeof v !== "string") throw new Error(`metadata value for '${k}' must be a string, got ${describe(v)}`);
      meta[k] = v;
    }
    header.__metadata__ = meta;
  }
  let offset = 0;
  for (const it of items) {
    header[it.name] = { dtype: it.dtype, shape: it.shape, data_offsets: [offset, offset + it.bytes.byteLength] };
    offset += it.bytes.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Math.ceil(json.byteLength / 8) * 8; // so the data buffer starts 8-aligned
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return [head, ...items.map((it) => it.bytes)];
}

/** The whole file in memory. */
export function encodeSafetensors(tensors: TensorsToWrite, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const parts = planSafetensors(tensors, metadata);
  const out = new Uint8Array(parts.reduce((a, p) => a + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Writes the file atomically (temp file + fsync + rename); returns the sha256 hex of its bytes. */
export function writeSafetensors(
  path: string,
  tensors: TensorsToWrite,
  metadata?: Readonly<Record<string, string>>,
): string {
  return writeFileAtomic(path, planSafetensors(tensors, metadata));
}
