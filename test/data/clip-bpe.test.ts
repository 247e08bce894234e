// CLIP's byte-level BPE tokenizer against transformers' CLIPTokenizer on 19 tricky strings
// (test/fixtures/clip_bpe_tiny/cases.json): unpadded ids, and padded/truncated to 77.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClipBpeTokenizer, clipPreTokenize } from "../../services/lib/data/clip-bpe.ts";

const DIR = join(import.meta.dir, "..", "fixtures", "clip_bpe_tiny");
const fixture = JSON.parse(readFileSync(join(DIR, "cases.json"), "utf8")) as {
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  vocab_size: number;
  cases: { text: string; input_ids: number[]; input_ids_max_length_77: number[] }[];
};

describe("ClipBpeTokenizer (clip_bpe_tiny parity with transformers)", () => {
  const tok = ClipBpeTokenizer.load(DIR);

  test("special tokens, vocabulary size and default length", () => {
    expect(tok.bosId).toBe(fixture.bos_token_id);
    expect(tok.eosId).toBe(fixture.eos_token_id);
    expect(tok.padId).toBe(fixture.pad_token_id);
    expect(tok.vocabSize).toBe(fixture.vocab_size);
    // model_max_length in the fixture is transformers' "no limit" sentinel: CLIP's 77 applies.
    expect(tok.maxLength).toBe(77);
    expect(fixture.cases.length).toBe(19);
  });

  for (const c of fixture.cases) {
    test(`ids of ${JSON.stringify(c.text.length > 40 ? `${c.text.slice(0, 40)}...` : c.text)}`, () => {
      expect(tok.encode(c.text).ids).toEqual(c.input_ids);
      const padded = tok.encode(c.text, 77);
      expect(padded.ids).toEqual(c.input_ids_max_length_77);
      expect(padded.dropped).toBe(Math.max(0, c.input_ids.length - 77));
    });
  }

  test("encodeBatch lays rows out at maxLength", () => {
    const texts = fixture.cases.map((c) => c.text);
    const ids = tok.encodeBatch(texts);
    expect(ids.length).toBe(texts.length * 77);
    fixture.cases.forEach((c, i) => {
      expect(Array.from(ids.subarray(i * 77, (i + 1) * 77))).toEqual(c.input_ids_max_length_77);
    });
  });

  test("the over-long case really truncates, keeping <eos> last", () => {
    const long = fixture.cases.find((c) => c.input_ids.length > 77);
    expect(long).toBeDefined();
    const { ids, dropped } = tok.encode(long!.text, 77);
    expect(dropped).toBeGreaterThan(0);
    expect(tok.droppedTokens(long!.text)).toBe(dropped);
    expect(tok.droppedTokens("cat face")).toBe(0);
    expect(ids[76]).toBe(tok.eosId);
  });

  test("pre-tokenisation: normalisation and CLIP's split", () => {
    expect(clipPreTokenize("  It's   A\tDOG's 42!!  ")).toEqual(["it", "'s", "a", "dog", "'s", "4", "2", "!!"]);
    expect(clipPreTokenize("")).toEqual([]);
  });

  test("save writes a folder that loads to the same tokenizer", () => {
    const out = mkdtempSync(join(tmpdir(), "clip-bpe-"));
    try {
      tok.save(out);
      expect(readFileSync(join(out, "merges.txt"), "utf8").startsWith("#version: 0.2\n")).toBe(true);
      const again = ClipBpeTokenizer.load(out);
      for (const c of fixture.cases) expect(again.encode(c.text, 77).ids).toEqual(c.input_ids_max_length_77);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test("bad folders give clear errors", () => {
    const out = mkdtempSync(join(tmpdir(), "clip-bpe-"));
    try {
      expect(() => ClipBpeTokenizer.load(out)).toThrow(/cannot read .*vocab\.json/);
      writeFileSync(join(out, "vocab.json"), '{"a": 0}');
      writeFileSync(join(out, "merges.txt"), "#version: 0.2\na b\n");
      expect(() => ClipBpeTokenizer.load(out)).toThrow(/bos token <\|startoftext\|> is not in the vocabulary/);
      writeFileSync(join(out, "merges.txt"), "#version: 0.2\nabc\n");
      expect(() => ClipBpeTokenizer.load(out)).toThrow(/rule 1 "abc" is not a pair/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
