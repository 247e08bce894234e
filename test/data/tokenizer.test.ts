import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { emojiRecords } from "../../services/lib/data/emoji.ts";
import { BOS_ID, EOS_ID, PAD_ID, splitWords, UNK_ID, WordTokenizer } from "../../services/lib/data/tokenizer.ts";

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "tokenizer-"));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const small = () => WordTokenizer.fromCaptions(["cat face", "dog face", "cat", "t-rex 2"], { maxLength: 8 });

describe("WordTokenizer", () => {
  test("vocabulary: special tokens first, then words by frequency, ties alphabetical", () => {
    expect(small().vocab).toEqual(["<pad>", "<bos>", "<eos>", "<unk>", "cat", "face", "2", "dog", "rex", "t"]);
    expect([PAD_ID, BOS_ID, EOS_ID, UNK_ID]).toEqual([0, 1, 2, 3]);
  });

  test("splits lower-case words on anything but letters and digits", () => {
    expect(splitWords("  T-Rex, 2 Côte d’Ivoire!")).toEqual(["t", "rex", "2", "côte", "d", "ivoire"]);
  });

  test("encode lays out bos, words, eos, padding; decode inverts it", () => {
    const tok = small();
    expect([...tok.encode("Cat FACE")]).toEqual([BOS_ID, 4, 5, EOS_ID, 0, 0, 0, 0]);
    expect(tok.decode(tok.encode("cat face"))).toBe("cat face");
    expect(tok.decode(tok.encode("T-Rex 2"))).toBe("t rex 2");
  });

  test("unknown words map to <unk>", () => {
    const tok = small();
    expect([...tok.encode("zebra cat")]).toEqual([BOS_ID, UNK_ID, 4, EOS_ID, 0, 0, 0, 0]);
    expect(tok.decode(tok.encode("zebra cat"))).toBe("<unk> cat");
  });

  test("truncation keeps <eos> as the last token", () => {
    const tok = small();
    const ids = tok.encode("cat dog cat dog cat dog cat dog cat");
    expect(ids.length).toBe(8);
    expect([...ids]).toEqual([BOS_ID, 4, 7, 4, 7, 4, 7, EOS_ID]);
  });

  test("the empty prompt is [bos, eos, pad...]", () => {
    const tok = small();
    expect([...tok.encode("")]).toEqual([BOS_ID, EOS_ID, 0, 0, 0, 0, 0, 0]);
    expect([...tok.encode(" ,, ")]).toEqual([...tok.encode("")]);
    expect(tok.decode(tok.encode(""))).toBe("");
  });

  test("batches and eos positions", () => {
    const tok = small();
    const ids = tok.encodeBatch(["", "cat face", "cat dog cat dog cat dog cat dog"]);
    expect(ids.length).toBe(3 * 8);
    expect([...ids.subarray(8, 16)]).toEqual([...tok.encode("cat face")]);
    expect([...tok.eosPositions(ids)]).toEqual([1, 3, 7]);
  });

  test("save and load round trip", () => {
    const dir = tempDir();
    const tok = small();
    tok.save(dir);
    expect(existsSync(join(dir, "tokenizer", "vocab.json"))).toBe(true);
    const config = JSON.parse(readFileSync(join(dir, "tokenizer", "tokenizer_config.json"), "utf8"));
    expect(config).toMatchObject({
      model_max_length: 8,
      pad_token: "<pad>",
      bos_token: "<bos>",
      eos_token: "<eos>",
      unk_token: "<unk>",
    });
    const vocab = JSON.parse(readFileSync(join(dir, "tokenizer", "vocab.json"), "utf8"));
    expect(vocab["<eos>"]).toBe(2);
    expect(vocab.cat).toBe(4);
    const loaded = WordTokenizer.load(dir);
    expect(loaded.vocab).toEqual(tok.vocab);
    expect(loaded.maxLength).toBe(8);
    expect([...loaded.encode("dog face")]).toEqual([...tok.encode("dog face")]);
  });

  test("load rejects a vocabulary with holes or misplaced special tokens", () => {
    const dir = tempDir();
    small().save(dir);
    const path = join(dir, "tokenizer", "vocab.json");
    writeFileSync(path, JSON.stringify({ "<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, cat: 5 }));
    expect(() => WordTokenizer.load(dir)).toThrow(/id 4 is missing/);
    writeFileSync(path, JSON.stringify({ "<bos>": 0, "<pad>": 1, "<eos>": 2, "<unk>": 3 }));
    expect(() => WordTokenizer.load(dir)).toThrow(/must be <pad>/);
  });

  test("the eos-last layout (the emoji CLIP's): <eos> has the highest id and survives save/load", () => {
    const tok = WordTokenizer.fromCaptions(["cat face", "dog face", "cat"], { maxLength: 6, eosLast: true });
    expect(tok.vocab).toEqual(["<pad>", "<bos>", "<unk>", "cat", "face", "dog", "<eos>"]);
    expect([tok.padId, tok.bosId, tok.unkId, tok.eosId]).toEqual([0, 1, 2, 6]);
    expect([...tok.encode("dog zebra")]).toEqual([1, 5, 2, 6, 0, 0]);
    expect(tok.decode(tok.encode("dog zebra"))).toBe("dog <unk>");
    expect([...tok.eosPositions(tok.encodeBatch(["cat", ""]))]).toEqual([2, 1]);
    const dir = tempDir();
    tok.save(dir);
    const loaded = WordTokenizer.load(dir);
    expect(loaded.eosId).toBe(6);
    expect([...loaded.encode("cat face")]).toEqual([...tok.encode("cat face")]);
    expect(() => new WordTokenizer(["<pad>", "<unk>", "<bos>", "cat", "<eos>"])).toThrow(/id 1 must be <bos>/);
  });

  test("every emoji caption fits 16 tokens and round-trips", () => {
    const captions = emojiRecords().map((r) => r.caption);
    const tok = WordTokenizer.fromCaptions(captions, { maxLength: 16 });
    expect(tok.vocabSize).toBeGreaterThan(1000);
    expect(tok.vocabSize).toBeLessThan(3000);
    for (const caption of captions) {
      const ids = tok.encode(caption);
      expect(ids.includes(UNK_ID)).toBe(false);
      expect(tok.decode(ids)).toBe(splitWords(caption).join(" "));
    }
    // Style tags are words of the captions they are appended to, so they are in the vocabulary
    // once the tokenizer is built from styled captions.
    const styled = WordTokenizer.fromCaptions(["cat face, twemoji", "cat face, noto"]);
    expect(styled.decode(styled.encode("cat face, twemoji"))).toBe("cat face twemoji");
  });
});
