// The captioned emoji images the built-in base model is pretrained on (DESIGN.md §5): the 64x64
// PNGs of the emoji-datasource-<set> npm packages, alpha-composited on white, downscaled with an
// antialiasing Lanczos-3 kernel and stored as RGB uint8. Captions are the Unicode names in lower case; the
// image set travels as a separate style tag so a caption can be "cat face" or "cat face, twemoji".
// Building takes seconds, so loadEmojiDataset keeps the result in a binary cache under .cache/.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import sharp from "sharp";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";

export type EmojiSource = "google" | "twitter";

export const EMOJI_SOURCES: readonly EmojiSource[] = ["google", "twitter"];

/** The style tag a caption may carry to say which image set drew the emoji. */
export const STYLE_TAGS: Readonly<Record<EmojiSource, string>> = { google: "noto", twitter: "twemoji" };

/** The subcategories of "Animals & Nature" that hold animals (the "simple animals" prompt set). */
export const ANIMAL_SUBCATEGORIES: readonly string[] = [
  "animal-mammal",
  "animal-bird",
  "animal-amphibian",
  "animal-reptile",
  "animal-marine",
  "animal-bug",
];

// Entries of those subcategories that are parts or traces of animals, not animals: a prompt
// "a paw prints riding a bike" makes no sense.
const NOT_ANIMALS = new Set(["paw prints", "pig nose", "spider web", "feather", "wing", "coral", "spiral shell"]);

export interface EmojiRecord {
  /** The emoji's name in lower case ("cat face"). */
  caption: string;
  source: EmojiSource;
  /** STYLE_TAGS[source]: "noto" or "twemoji". */
  style: string;
  category: string;
  subcategory: string;
  /** Code points in hex joined by "-" ("1F431"). */
  unified: string;
}

export interface EmojiDataset {
  /** Side of each square image in pixels. */
  size: number;
  /** images is (N, size, size, 3) RGB, row-major, N = records.length. */
  images: Uint8Array;
  records: EmojiRecord[];
}

export interface EmojiDatasetOptions {
  sources?: readonly EmojiSource[];
  /** Output side in pixels (the PNGs are 64x64). */
  size?: number;
  /** Keep only the first `limit` emojis (in the packages' sort order) of each source: for quick tests. */
  limit?: number;
}

// The fields of emoji-datasource's emoji.json that we read.
interface DatasourceEntry {
  name?: string | null;
  short_name: string;
  unified: string;
  image: string;
  category: string;
  subcategory: string;
  sort_order: number;
  has_img_google?: boolean;
  has_img_twitter?: boolean;
}

const require = createRequire(import.meta.url);

function packageDir(source: EmojiSource): string {
  return dirname(require.resolve(`emoji-datasource-${source}/package.json`));
}

function packageVersion(source: EmojiSource): string {
  const pkg = JSON.parse(readFileSync(join(packageDir(source), "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

/** "CAT FACE" -> "cat face"; without a name, the short name with underscores as spaces. */
export function emojiCaption(entry: { name?: string | null; short_name: string }): string {
  const name = entry.name?.trim() || entry.short_name.replace(/_/g, " ");
  return name.toLowerCase();
}

/** "cat face, twemoji": the caption with the record's style tag appended. */
export function styledCaption(record: EmojiRecord): string {
  return `${record.caption}, ${record.style}`;
}

/** The base entries of one source that have an image file; skin tones and their swatches excluded. */
function listEntries(source: EmojiSource): DatasourceEntry[] {
  const dir = packageDir(source);
  const entries = JSON.parse(readFileSync(join(dir, "emoji.json"), "utf8")) as DatasourceEntry[];
  const hasImage = source === "google" ? "has_img_google" : "has_img_twitter";
  return entries
    .filter((e) => e[hasImage] === true && e.category !== "Component")
    .filter((e) => existsSync(join(dir, "img", source, "64", e.image)))
    .sort((a, b) => a.sort_order - b.sort_order);
}

/**
 * Resampling weights for a line of inLen pixels to outLen with Lanczos-3. When downscaling the
 * kernel is stretched by the scale factor so it also low-passes (antialiasing, as PIL and libvips
 * do). For output i, weights[i*taps + k] applies to input first[i] + k; taps past the edges are
 * dropped and the rest renormalised.
 */
export function lanczos3Weights(
  inLen: number,
  outLen: number,
): { first: Int32Array; taps: number; weights: Float64Array } {
  const scale = inLen / outLen;
  const stretch = Math.max(scale, 1);
  const support = 3 * stretch;
  const taps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outLen);
  const weights = new Float64Array(outLen * taps);
  const sinc = (x: number) => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));
  for (let i = 0; i < outLen; i++) {
    const center = (i + 0.5) * scale; // in input coordinates, pixel k spans [k, k+1)
    const lo = Math.max(0, Math.floor(center - support));
    const hi = Math.min(inLen, Math.ceil(center + support));
    first[i] = lo;
    let sum = 0;
    for (let k = lo; k < hi && k - lo < taps; k++) {
      const x = (k + 0.5 - center) / stretch;
      const w = Math.abs(x) < 3 ? sinc(x) * sinc(x / 3) : 0;
      weights[i * taps + (k - lo)] = w;
      sum += w;
    }
    for (let k = 0; k < taps; k++) weights[i * taps + k]! /= sum;
  }
  return { first, taps, weights };
}

/**
 * Composite RGBA on white, then resample to size x size with Lanczos-3 (rows, then columns).
 * rgba is (h, w, 4) uint8; returns (size, size, 3) uint8.
 */
export function flattenAndResize(rgba: Uint8Array, w: number, h: number, size: number): Uint8Array {
  const flat = new Float32Array(h * w * 3); // (h, w, 3) on white, 0..255
  for (let p = 0; p < h * w; p++) {
    const a = rgba[p * 4 + 3]! / 255;
    const white = 255 * (1 - a);
    flat[p * 3] = rgba[p * 4]! * a + white;
    flat[p * 3 + 1] = rgba[p * 4 + 1]! * a + white;
    flat[p * 3 + 2] = rgba[p * 4 + 2]! * a + white;
  }
  const cols = cachedWeights(w, size);
  const rows = cachedWeights(h, size);
  const tmp = new Float32Array(h * size * 3); // (h, size, 3): rows resampled
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < size; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let k = 0, src = (y * w + cols.first[x]!) * 3; k < cols.taps; k++, src += 3) {
        const wk = cols.weights[x * cols.taps + k]!;
        if (wk === 0) continue; // also covers taps dropped past the right edge
        r += wk * flat[src]!;
        g += wk * flat[src + 1]!;
        b += wk * flat[src + 2]!;
      }
      const dst = (y * size + x) * 3;
      tmp[dst] = r;
      tmp[dst + 1] = g;
      tmp[dst + 2] = b;
    }
  }
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let k = 0, src = (rows.first[y]! * size + x) * 3; k < rows.taps; k++, src += size * 3) {
        const wk = rows.weights[y * rows.taps + k]!;
        if (wk === 0) continue;
        r += wk * tmp[src]!;
        g += wk * tmp[src + 1]!;
        b += wk * tmp[src + 2]!;
      }
      // Lanczos lobes overshoot: clamp.
      const dst = (y * size + x) * 3;
      out[dst] = Math.min(255, Math.max(0, Math.round(r)));
      out[dst + 1] = Math.min(255, Math.max(0, Math.round(g)));
      out[dst + 2] = Math.min(255, Math.max(0, Math.round(b)));
    }
  }
  return out;
}

const weightCache = new Map<string, ReturnType<typeof lanczos3Weights>>();

function cachedWeights(inLen: number, outLen: number): ReturnType<typeof lanczos3Weights> {
  const key = `${inLen}>${outLen}`;
  let weights = weightCache.get(key);
  if (!weights) {
    weights = lanczos3Weights(inLen, outLen);
    weightCache.set(key, weights);
  }
  return weights;
}

/** Decode one PNG with sharp, composite on white and resize to size x size: (size, size, 3) uint8. */
async function loadEmojiImage(path: string, size: number): Promise<Uint8Array> {
  // The resampling is ours rather than sharp's resize: 3x faster on tiny images, and the cached
  // bytes do not change when libvips changes its kernels.
  const { data, info } = await sharp(path).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 4) throw new Error(`${path}: expected RGBA after decoding, got ${info.channels} channels`);
  return flattenAndResize(data, info.width, info.height, size);
}

/** Run fn over items with at most `limit` calls in flight; results in input order. */
async function mapPool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The images to load and their records, ordered by source, then the packages' emoji sort order. */
function listEmojis(options: EmojiDatasetOptions): { path: string; record: EmojiRecord }[] {
  const jobs: { path: string; record: EmojiRecord }[] = [];
  for (const source of options.sources ?? EMOJI_SOURCES) {
    const dir = join(packageDir(source), "img", source, "64");
    let entries = listEntries(source);
    if (options.limit !== undefined) entries = entries.slice(0, options.limit);
    for (const e of entries) {
      jobs.push({
        path: join(dir, e.image),
        record: {
          caption: emojiCaption(e),
          source,
          style: STYLE_TAGS[source],
          category: e.category,
          subcategory: e.subcategory,
          unified: e.unified,
        },
      });
    }
  }
  return jobs;
}

/** The records of the dataset without decoding any image (for vocabularies and prompt sets). */
export function emojiRecords(options: Omit<EmojiDatasetOptions, "size"> = {}): EmojiRecord[] {
  return listEmojis(options).map((job) => job.record);
}

/** Build the dataset from the npm packages (no cache): records ordered by source, then emoji sort order. */
export async function buildEmojiDataset(options: EmojiDatasetOptions = {}): Promise<EmojiDataset> {
  const size = options.size ?? 32;
  if (!Number.isInteger(size) || size < 1 || size > 64) throw new Error(`emoji image size must be 1..64, got ${size}`);
  const jobs = listEmojis(options);
  const pixels = size * size * 3;
  const images = new Uint8Array(jobs.length * pixels);
  const decoded = await mapPool(jobs, 16, (job) => loadEmojiImage(job.path, size));
  decoded.forEach((data, i) => {
    images.set(data, i * pixels);
  });
  return { size, images, records: jobs.map((j) => j.record) };
}

// ---- binary cache ---------------------------------------------------------------------------

// Bump when the preprocessing changes so stale caches are rebuilt, not trusted.
const CACHE_FORMAT = 1;

interface CacheIndex {
  format: number;
  size: number;
  sources: EmojiSource[];
  limit: number | null;
  packages: Record<string, string>;
  count: number;
  sha256: string;
  records: EmojiRecord[];
}

/** Default cache folder: <repo>/.cache, or DDPO_CACHE_DIR. */
export function defaultCacheDir(): string {
  return process.env.DDPO_CACHE_DIR ?? join(import.meta.dir, "..", "..", "..", ".cache");
}

export function emojiCachePaths(options: EmojiDatasetOptions & { cacheDir?: string } = {}): {
  bin: string;
  index: string;
} {
  const sources = options.sources ?? EMOJI_SOURCES;
  const size = options.size ?? 32;
  const limit = options.limit !== undefined ? `-first${options.limit}` : "";
  const stem = join(options.cacheDir ?? defaultCacheDir(), `emoji-${size}-${sources.join("+")}${limit}`);
  return { bin: `${stem}.bin`, index: `${stem}.json` };
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function readCache(paths: { bin: string; index: string }, expected: Omit<CacheIndex, "count" | "sha256" | "records">) {
  if (!existsSync(paths.index) || !existsSync(paths.bin)) return null;
  try {
    const index = JSON.parse(readFileSync(paths.index, "utf8")) as CacheIndex;
    const same =
      index.format === expected.format &&
      index.size === expected.size &&
      index.limit === expected.limit &&
      JSON.stringify(index.sources) === JSON.stringify(expected.sources) &&
      JSON.stringify(index.packages) === JSON.stringify(expected.packages);
    if (!same) return null;
    const images = new Uint8Array(readFileSync(paths.bin));
    if (images.length !== index.count * index.size * index.size * 3 || index.records.length !== index.count)
      return null;
    if (sha256(images) !== index.sha256) return null;
    return { size: index.size, images, records: index.records } satisfies EmojiDataset;
  } catch {
    return null; // unreadable or half-written: rebuild
  }
}

/**
 * The dataset, from the cache when it matches the options and the installed package versions,
 * else built and written there (images as raw bytes in .bin, records and checksum in .json).
 */
export async function loadEmojiDataset(
  options: EmojiDatasetOptions & { cacheDir?: string } = {},
): Promise<EmojiDataset> {
  const sources = [...(options.sources ?? EMOJI_SOURCES)];
  const expected = {
    format: CACHE_FORMAT,
    size: options.size ?? 32,
    sources,
    limit: options.limit ?? null,
    packages: Object.fromEntries(sources.map((s) => [`emoji-datasource-${s}`, packageVersion(s)])),
  };
  const paths = emojiCachePaths(options);
  const cached = readCache(paths, expected);
  if (cached) return cached;

  const dataset = await buildEmojiDataset(options);
  // Each file is written atomically, images first; a reader that lands between the two renames
  // finds the old index's checksum wrong for the new images and rebuilds instead of mixing them.
  const digest = writeFileAtomic(paths.bin, [dataset.images]);
  const index: CacheIndex = { ...expected, count: dataset.records.length, sha256: digest, records: dataset.records };
  writeFileAtomic(paths.index, [Buffer.from(JSON.stringify(index))]);
  return dataset;
}

// ---- views ----------------------------------------------------------------------------------

/**
 * Gather images[indices] as floats in [-1, 1], channels first.
 * images is (N, size, size, 3) uint8; returns (indices.length, 3, size, size).
 */
export function toFloatNCHW(images: Uint8Array, indices: ArrayLike<number>, size = 32): Float32Array {
  const hw = size * size;
  const count = images.length / (hw * 3);
  if (!Number.isInteger(count))
    throw new Error(`images length ${images.length} is not a multiple of ${size}x${size}x3`);
  const out = new Float32Array(indices.length * 3 * hw);
  for (let b = 0; b < indices.length; b++) {
    const n = indices[b]!;
    if (!Number.isInteger(n) || n < 0 || n >= count) throw new Error(`image index ${n} out of range [0, ${count})`);
    const src = n * hw * 3;
    const dst = b * 3 * hw;
    for (let p = 0; p < hw; p++) {
      for (let c = 0; c < 3; c++) {
        out[dst + c * hw + p] = images[src + p * 3 + c]! / 127.5 - 1;
      }
    }
  }
  return out;
}

/** Whether a record shows an animal (the "simple animals" prompt set's subject). */
export function isAnimal(r: EmojiRecord): boolean {
  return (
    r.category === "Animals & Nature" && ANIMAL_SUBCATEGORIES.includes(r.subcategory) && !NOT_ANIMALS.has(r.caption)
  );
}

/** The distinct captions of animal emojis, in the packages' order ("cat face", "tiger", ...). */
export function animalNames(records: readonly EmojiRecord[]): string[] {
  return [...new Set(records.filter(isAnimal).map((r) => r.caption))];
}
