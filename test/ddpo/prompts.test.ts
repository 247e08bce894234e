import { describe, expect, test } from "bun:test";
import {
  ACTIVITIES,
  indefiniteArticle,
  listPromptSets,
  promptSetByName,
  promptSetFromList,
} from "../../services/lib/ddpo/prompts.ts";
import { Mulberry32 } from "../../services/lib/training/random.ts";

describe("prompt sets", () => {
  test("every set is non-empty and distinct", () => {
    expect(listPromptSets()).toEqual(["animals", "all_emoji", "animals_train", "animals_heldout", "animal_activities"]);
    for (const name of listPromptSets()) {
      const set = promptSetByName(name);
      expect(set.name).toBe(name);
      expect(set.prompts.length).toBeGreaterThan(0);
      expect(new Set(set.prompts).size).toBe(set.prompts.length);
    }
    expect(() => promptSetByName("imagenet")).toThrow(/unknown prompt set "imagenet"; known: animals/);
  });

  test("an inline set: list: then prompts separated by commas", () => {
    const set = promptSetByName("list: goat, cow,bug ,goat");
    expect(set.name).toBe("list: goat, cow,bug ,goat");
    expect(set.prompts).toEqual(["goat", "cow", "bug"]);
    const drawn = set.sample(new Mulberry32(1), 300);
    for (const p of ["goat", "cow", "bug"]) expect(drawn).toContain(p);
    expect(() => promptSetByName("list:")).toThrow(/empty prompt in the list/);
    expect(() => promptSetByName("list:tiger,,frog")).toThrow(/empty prompt in the list/);
    expect(() => promptSetByName(`list:${Array.from({ length: 1001 }, (_, i) => `p${i}`).join(",")}`)).toThrow(
      /1001 prompts, at most 1000/,
    );
  });

  test("animals are animal names; all_emoji holds them and more", () => {
    const animals = promptSetByName("animals").prompts;
    expect(animals).toContain("tiger");
    expect(animals).toContain("owl");
    expect(animals).not.toContain("paw prints");
    const all = promptSetByName("all_emoji").prompts;
    expect(all.length).toBeGreaterThan(animals.length * 5);
    for (const a of animals) expect(all).toContain(a);
  });

  test("animals_train and animals_heldout split the animals two thirds / one third, disjoint", () => {
    const animals = promptSetByName("animals").prompts;
    const train = promptSetByName("animals_train").prompts;
    const heldout = promptSetByName("animals_heldout").prompts;
    expect(train.length + heldout.length).toBe(animals.length);
    expect(heldout.length).toBe(Math.floor(animals.length / 3));
    for (const h of heldout) expect(train).not.toContain(h);
    expect([...train, ...heldout].sort()).toEqual([...animals].sort());
  });

  test("animal_activities pairs every animal with every activity, with a/an right", () => {
    const set = promptSetByName("animal_activities");
    expect(set.prompts.length).toBe(promptSetByName("animals").prompts.length * ACTIVITIES.length);
    expect(ACTIVITIES.length).toBeGreaterThanOrEqual(10);
    expect(set.prompts).toContain("a tiger riding a bike");
    expect(set.prompts).toContain("an owl playing chess");
    expect(set.prompts).toContain("an elephant washing dishes");
    expect(set.prompts).toContain("an ox doing homework");
    expect(set.prompts).toContain("a unicorn face riding a bike");
    for (const p of set.prompts) expect(p).toMatch(/^(a [^aeiou]|an [aeiou]|a unicorn)/);
  });

  test("indefinite articles", () => {
    const cases: [string, string][] = [
      ["tiger", "a"],
      ["owl", "an"],
      ["eagle", "an"],
      ["orangutan", "an"],
      ["unicorn", "a"],
      ["ewe", "a"],
      ["hour", "an"],
      ["horse", "a"],
      ["Octopus", "an"],
      ["t-rex", "a"],
    ];
    for (const [noun, article] of cases) expect(`${indefiniteArticle(noun)} ${noun}`).toBe(`${article} ${noun}`);
  });

  test("sampling is deterministic for a seed and draws from the set", () => {
    const set = promptSetByName("animals");
    const a = set.sample(new Mulberry32(7), 32);
    const b = set.sample(new Mulberry32(7), 32);
    const c = set.sample(new Mulberry32(8), 32);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a.length).toBe(32);
    for (const p of a) expect(set.prompts).toContain(p);
    // one rng draw per prompt: consecutive calls continue the same stream
    const rng = new Mulberry32(7);
    expect([...set.sample(rng, 16), ...set.sample(rng, 16)]).toEqual(a);
  });

  test("custom lists, bad counts and bad rngs", () => {
    const set = promptSetFromList("two", "test", ["x", "y", "x"]);
    expect(set.prompts).toEqual(["x", "y"]);
    expect(set.sample({ next: () => 0 }, 2)).toEqual(["x", "x"]);
    expect(set.sample({ next: () => 0.999 }, 1)).toEqual(["y"]);
    expect(set.sample({ next: () => 0 }, 0)).toEqual([]);
    expect(() => set.sample({ next: () => 1 }, 1)).toThrow(/not in \[0, 1\)/);
    expect(() => set.sample({ next: () => 0 }, -1)).toThrow(/cannot sample/);
    expect(() => promptSetFromList("none", "", [])).toThrow(/empty/);
  });
});
