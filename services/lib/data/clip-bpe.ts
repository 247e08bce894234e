// CLIP's byte-level BPE tokenizer (openai CLIP, Stable Diffusion 1.x, transformers' CLIPTokenizer),
// read from a transformers folder's vocab.json ({token: id}) and merges.txt ("a b" per line, ranked
// by line, after a "#version" header). Per text, as transformers' tokenizers backend does it:
//   1. the special tokens <|startoftext|> / <|endoftext|> are cut out first (matched verbatim);
//   2. each remaining piece is normalised: NFC, every whitespace run -> " ", lower-case;
//   3. CLIP's regex splits it into words (contractions, letter runs, single digits, runs of other
//      non-space characters); whitespace is dropped;
//   4. each word's UTF-8 bytes become GPT-2's printable byte symbols, the last one with "</w>";
//   5. BPE merges the adjacent pair of lowest rank until none is in merges.txt.
// Sequences are <bos> tokens... <eos>; with a fixed length (77 for openai's checkpoints) the
// tokens are truncated to length-2 and the row is padded with pad_token (<|endoftext|>).

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const CLIP_BPE_FILES = {
  vocab: "vocab.json",
  merges: "merges.txt",
  config: "tokenizer_config.json",
} as const;

/** openai CLIP's context length. */
export const CLIP_MAX_LENGTH = 77;

const WORD_END = "</w>";

// \p{L}+ and single \p{N} as openai's `[\p{L}]+|[\p{N}]`; contractions first, as in its pattern.
const CLIP_WORDS = /'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;

/** GPT-2's byte -> printable character table: printable Latin-1 bytes map to themselves, the rest to U+0100.. */
function byteSymbols(): string[] {
  const out: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCodePoint(printable ? b : next++);
  }
  return out;
}
const BYTE_SYMBOLS = byteSymbols();

/** Words of one text piece after CLIP's normalisation (NFC, whitespace collapsed, lower-case). */
export function clipPreTokenize(piece: string): string[] {
  const normal = piece.normalize("NFC").replace(/\s+/gu, " ").toLowerCase();
  return normal.match(CLIP_WORDS) ?? [];
}

export interface ClipBpeSpecials {
  bos: string;
  eos: string;
  pad: string;
  unk: string;
}

export interface ClipEncoding {
  ids: number[];
  /** Tokens dropped to fit the length (0 when it fits or no length was asked for). */
  dropped: number;
}

export class ClipBpeTokenizer {
  readonly #ids: Map<string, number>;
  readonly #ranks: Map<string, number>;
  readonly #cache = new Map<string, number[]>();
  readonly #specials: RegExp;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;

  /**
   * vocab: token -> id; merges: pairs "a b" in rank order; maxLength: the fixed row length of
   * encodeBatch (transformers' max_length with padding="max_length", truncation=True).
   */
  constructor(
    vocab: Readonly<Record<string, number>>,
    readonly merges: readonly string[],
    readonly maxLength = CLIP_MAX_LENGTH,
    readonly specials: ClipBpeSpecials = {
      bos: "<|startoftext|>",
      eos: "<|endoftext|>",
      pad: "<|endoftext|>",
      unk: "<|endoftext|>",
    },
  ) {
    this.#ids = new Map(Object.entries(vocab));
    this.#ranks = new Map(merges.map((m, i) => [m, i]));
    const id = (role: keyof ClipBpeSpecials) => {
      const v = this.#ids.get(specials[role]);
      if (v === undefined) throw new Error(`CLIP tokenizer: ${role} token ${specials[role]} is not in the vocabulary`);
      return v;
    };
    this.bosId = id("bos");
    this.eosId = id("eos");
    this.padId = id("pad");
    this.unkId = id("unk");
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`maxLength must be >= 2, got ${maxLength}`);
    const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    this.#specials = new RegExp(`(${[...new Set([specials.bos, specials.eos])].map(literal).join("|")})`, "u");
  }

  get vocabSize(): number {
    let max = -1;
    for (const v of this.#ids.values()) if (v > max) max = v;
    return max + 1;
  }

  /** BPE ids of one pre-tokenized word. */
  #bpe(word: string): number[] {
    const cached = this.#cache.get(word);
    if (cached) return cached;
    const bytes = new TextEncoder().encode(word);
    const symbols = Array.from(bytes, (b) => BYTE_SYMBOLS[b]!);
    symbols[symbols.length - 1] += WORD_END;
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Number.POSITIVE_INFINITY;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.#ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      // Merge every occurrence of the best pair, left to right (openai's bpe()).
      const a = symbols[best]!;
      const b = symbols[best + 1]!;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else merged.push(symbols[i]!);
      }
      symbols.splice(0, symbols.length, ...merged);
    }
    const ids = symbols.map((s) => this.#ids.get(s) ?? this.unkId);
    if (this.#cache.size < 10_000) this.#cache.set(word, ids);
    return ids;
  }

  /** Token ids of a text without <bos>/<eos> (special tokens in the text become their ids). */
  tokenize(text: string): number[] {
    const out: number[] = [];
    for (const piece of text.split(this.#specials)) {
      if (piece === this.specials.bos) out.push(this.bosId);
      else if (piece === this.specials.eos) out.push(this.eosId);
      else for (const word of clipPreTokenize(piece)) out.push(...this.#bpe(word));
    }
    return out;
  }

  /** [<bos>, tokens..., <eos>]; with `length`, tokens truncated to length-2 and padded with pad to length. */
  encode(text: string, length?: number): ClipEncoding {
    const tokens = this.tokenize(text);
    if (length === undefined) return { ids: [this.bosId, ...tokens, this.eosId], dropped: 0 };
    const keep = Math.max(0, length - 2);
    const ids = [this.bosId, ...tokens.slice(0, keep), this.eosId];
    while (ids.length < length) ids.push(this.padId);
    return { ids, dropped: Math.max(0, tokens.length - keep) };
  }

  /** Tokens of `text` that encodeBatch drops to fit maxLength. */
  droppedTokens(text: string): number {
    return this.encode(text, this.maxLength).dropped;
  }

  /** (texts.length, maxLength) int32, row-major: every text padded or truncated to maxLength. */
  encodeBatch(texts: readonly string[]): Int32Array {
    const out = new Int32Array(texts.length * this.maxLength);
    texts.forEach((t, i) => {
      out.set(this.encode(t, this.maxLength).ids, i * this.maxLength);
    });
    return out;
  }

  /** Whether `dir` holds a CLIP BPE tokenizer (vocab.json + merges.txt). */
  static isIn(dir: string): boolean {
    return existsSync(join(dir, CLIP_BPE_FILES.vocab)) && existsSync(join(dir, CLIP_BPE_FILES.merges));
  }

  /**
   * The tokenizer of a transformers folder (vocab.json, merges.txt, optional tokenizer_config.json
   * for the special tokens). maxLength: the config's model_max_length when it is a real bound,
   * else 77, capped at `maxPositions` (the text tower's max_position_embeddings).
   */
  static load(dir: string, maxPositions = Number.POSITIVE_INFINITY): ClipBpeTokenizer {
    const read = (name: string) => {
      const path = join(dir, name);
      try {
        return readFileSync(path, "utf8");
      } catch (e) {
        throw new Error(`CLIP tokenizer: cannot read ${path}: ${(e as Error).message}`);
      }
    };
    let vocab: Record<string, number>;
    try {
      vocab = JSON.parse(read(CLIP_BPE_FILES.vocab));
    } catch (e) {
      throw new Error(`CLIP tokenizer: ${join(dir, CLIP_BPE_FILES.vocab)} is not JSON: ${(e as Error).message}`);
    }
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`CLIP tokenizer: vocab.json gives ${token} the id ${id}`);
    }
    const merges = read(CLIP_BPE_FILES.merges)
      .split("\n")
      .map((l) => l.replace(/\r$/, ""))
      .filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith("#version")));
    merges.forEach((m, i) => {
      if (m.split(" ").length !== 2) throw new Error(`CLIP tokenizer: merges.txt rule ${i + 1} "${m}" is not a pair`);
    });
    const specials: ClipBpeSpecials = {
      bos: "<|startoftext|>",
      eos: "<|endoftext|>",
      pad: "<|endoftext|>",
      unk: "<|endoftext|>",
    };
    let maxLength = CLIP_MAX_LENGTH;
    const configPath = join(dir, CLIP_BPE_FILES.config);
    if (existsSync(configPath)) {
      const c = JSON.parse(read(CLIP_BPE_FILES.config)) as Record<string, unknown>;
      // A special token is a string or, in older files, {"content": ...}.
      const token = (v: unknown) =>
        typeof v === "string"
          ? v
          : typeof v === "object" && v !== null
            ? (v as { content?: string }).content
            : undefined;
      for (const role of ["bos", "eos", "pad", "unk"] as const)
        specials[role] = token(c[`${role}_token`]) ?? specials[role];
      const m = c.model_max_length;
      if (typeof m === "number" && Number.isInteger(m) && m >= 2 && m <= 1_000_000) maxLength = m;
    }
    return new ClipBpeTokenizer(vocab, merges, Math.min(maxLength, maxPositions), specials);
  }

  /** Writes vocab.json, merges.txt (with its "#version: 0.2" header) and tokenizer_config.json into dir. */
  save(dir: string): void {
    writeFileSync(join(dir, CLIP_BPE_FILES.vocab), `${JSON.stringify(Object.fromEntries(this.#ids))}\n`);
    writeFileSync(join(dir, CLIP_BPE_FILES.merges), `#version: 0.2\n${this.merges.join("\n")}\n`);
    const config = {
      tokenizer_class: "CLIPTokenizer",
      bos_token: this.specials.bos,
      eos_token: this.specials.eos,
      pad_token: this.specials.pad,
      unk_token: this.specials.unk,
      model_max_length: this.maxLength,
    };
    writeFileSync(join(dir, CLIP_BPE_FILES.config), `${JSON.stringify(config, null, 2)}\n`);
  }
}
