// A word-level tokenizer for the built-in text encoder: lower-case words (runs of letters and
// digits) looked up in a vocabulary built from the training captions. Sequences are laid out as
// CLIP's are: <bos> words... <eos> <pad>..., a fixed model_max_length long, so the empty prompt
// (classifier-free guidance's unconditional input) is [<bos>, <eos>, <pad>, ...].
// Saved beside a checkpoint as tokenizer/vocab.json + tokenizer/tokenizer_config.json.
// Two vocabulary layouts: the text-to-image model's [<pad>, <bos>, <eos>, <unk>, words...], and
// the emoji CLIP's [<pad>, <bos>, <unk>, words..., <eos>]: transformers pools a CLIP text at its
// highest id when eos_token_id is 2, else at its first eos_token_id, so <eos> last makes both the eos.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Ids of the special tokens in the default (specials-first) layout. */
export const PAD_ID = 0;
export const BOS_ID = 1;
export const EOS_ID = 2;
export const UNK_ID = 3;

const SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"] as const;

export interface TokenizerConfig {
  tokenizer_class: "WordLevelTokenizer";
  model_max_length: number;
  do_lower_case: true;
  pad_token: "<pad>";
  bos_token: "<bos>";
  eos_token: "<eos>";
  unk_token: "<unk>";
}

/** Lower-case words of a text: runs of Unicode letters or digits ("Côte d’Ivoire" -> côte, d, ivoire). */
export function splitWords(text: string): string[] {
  return text
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

export class WordTokenizer {
  private readonly ids: Map<string, number>;
  readonly padId = PAD_ID;
  readonly bosId = BOS_ID;
  readonly eosId: number;
  readonly unkId: number;

  /**
   * vocab[id] is the token; ids 0..3 must be <pad>, <bos>, <eos>, <unk>, or (eos-last layout)
   * ids 0..2 <pad>, <bos>, <unk> and the last id <eos>.
   */
  constructor(
    readonly vocab: readonly string[],
    readonly maxLength = 16,
  ) {
    const eosLast = vocab[2] !== "<eos>" && vocab[vocab.length - 1] === "<eos>";
    const layout: Array<[number, string]> = eosLast
      ? [
          [0, "<pad>"],
          [1, "<bos>"],
          [2, "<unk>"],
        ]
      : SPECIAL_TOKENS.map((token, id) => [id, token]);
    for (const [id, token] of layout) {
      if (vocab[id] !== token) throw new Error(`vocabulary id ${id} must be ${token}, got ${vocab[id]}`);
    }
    this.eosId = eosLast ? vocab.length - 1 : EOS_ID;
    this.unkId = eosLast ? 2 : UNK_ID;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`maxLength must be >= 2, got ${maxLength}`);
    this.ids = new Map(vocab.map((token, id) => [token, id]));
    if (this.ids.size !== vocab.length) throw new Error("vocabulary has duplicate tokens");
  }

  /**
   * Vocabulary of every word in the captions seen at least minCount times, most frequent first
   * (ties alphabetical), so the same captions always give the same ids; `eosLast` gives the
   * emoji CLIP's layout.
   */
  static fromCaptions(
    captions: Iterable<string>,
    options: { maxLength?: number; minCount?: number; eosLast?: boolean } = {},
  ) {
    const counts = new Map<string, number>();
    for (const caption of captions) {
      for (const word of splitWords(caption)) counts.set(word, (counts.get(word) ?? 0) + 1);
    }
    const words = [...counts]
      .filter(([, n]) => n >= (options.minCount ?? 1))
      .sort(([a, na], [b, nb]) => nb - na || (a < b ? -1 : a > b ? 1 : 0))
      .map(([word]) => word);
    if (options.eosLast) return new WordTokenizer(["<pad>", "<bos>", "<unk>", ...words, "<eos>"], options.maxLength);
    return new WordTokenizer([...SPECIAL_TOKENS, ...words], options.maxLength);
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  tokenId(word: string): number {
    return this.ids.get(word) ?? this.unkId;
  }

  /** Words of `text` that encode drops to fit maxLength. */
  droppedTokens(text: string): number {
    return Math.max(0, splitWords(text).length - (this.maxLength - 2));
  }

  /** [<bos>, words..., <eos>, <pad>...] of length maxLength; words past maxLength-2 are dropped, <eos> kept. */
  encode(text: string): Int32Array {
    const out = new Int32Array(this.maxLength).fill(this.padId);
    const words = splitWords(text).slice(0, this.maxLength - 2);
    out[0] = this.bosId;
    words.forEach((word, i) => {
      out[i + 1] = this.tokenId(word);
    });
    out[words.length + 1] = this.eosId;
    return out;
  }

  /** Encode a batch: (texts.length, maxLength) int32, row-major. */
  encodeBatch(texts: readonly string[]): Int32Array {
    const out = new Int32Array(texts.length * this.maxLength);
    texts.forEach((text, b) => {
      out.set(this.encode(text), b * this.maxLength);
    });
    return out;
  }

  /** The words between <bos> and the first <eos>; unknown words come back as "<unk>". */
  decode(ids: ArrayLike<number>): string {
    const words: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.eosId) break;
      if (id === this.bosId || id === this.padId) continue;
      words.push(this.vocab[id] ?? "<unk>");
    }
    return words.join(" ");
  }

  /**
   * Position of the first <eos> in each row of ids (batch, maxLength): where a CLIP-style
   * encoder pools its sentence embedding.
   */
  eosPositions(ids: Int32Array): Int32Array {
    const batch = ids.length / this.maxLength;
    const out = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      const row = ids.subarray(b * this.maxLength, (b + 1) * this.maxLength);
      const at = row.indexOf(this.eosId);
      out[b] = at < 0 ? this.maxLength - 1 : at;
    }
    return out;
  }

  config(): TokenizerConfig {
    return {
      tokenizer_class: "WordLevelTokenizer",
      model_max_length: this.maxLength,
      do_lower_case: true,
      pad_token: "<pad>",
      bos_token: "<bos>",
      eos_token: "<eos>",
      unk_token: "<unk>",
    };
  }

  /** Write modelDir/tokenizer/vocab.json ({token: id}) and tokenizer_config.json. */
  save(modelDir: string): void {
    const dir = join(modelDir, "tokenizer");
    mkdirSync(dir, { recursive: true });
    const vocab = Object.fromEntries(this.vocab.map((token, id) => [token, id]));
    writeFileSync(join(dir, "vocab.json"), `${JSON.stringify(vocab, null, 1)}\n`);
    writeFileSync(join(dir, "tokenizer_config.json"), `${JSON.stringify(this.config(), null, 2)}\n`);
  }

  static load(modelDir: string): WordTokenizer {
    const dir = join(modelDir, "tokenizer");
    const vocab = JSON.parse(readFileSync(join(dir, "vocab.json"), "utf8")) as Record<string, number>;
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")) as Partial<TokenizerConfig>;
    if (config.tokenizer_class !== undefined && config.tokenizer_class !== "WordLevelTokenizer") {
      throw new Error(`${dir}: tokenizer_class ${config.tokenizer_class} is not WordLevelTokenizer`);
    }
    const tokens: string[] = [];
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`${dir}/vocab.json: bad id ${id} for ${token}`);
      if (tokens[id] !== undefined) throw new Error(`${dir}/vocab.json: id ${id} used twice`);
      tokens[id] = token;
    }
    for (let id = 0; id < tokens.length; id++) {
      if (tokens[id] === undefined) throw new Error(`${dir}/vocab.json: id ${id} is missing`);
    }
    return new WordTokenizer(tokens, config.model_max_length ?? 16);
  }
}
