// Prompt sets that mirror the paper's (DESIGN.md §5), drawn from the emoji captions the base model
// was pretrained on: animal names (the "simple animals" set), every emoji name, and
// "a(n) <animal> <activity>" (the prompt-alignment set). Each epoch draws prompts uniformly with
// replacement, like ddpo-pytorch's random.choice, from a seedable rng so a run can be replayed.

import { animalNames, emojiRecords } from "../data/emoji.ts";

/** What a prompt set needs from a random generator (Mulberry32 in services/lib/training/random.ts). */
export interface UniformSource {
  /** Uniform in [0, 1). */
  next(): number;
}

export interface PromptSet {
  readonly name: string;
  readonly description: string;
  /** Every distinct prompt the set can produce. */
  readonly prompts: readonly string[];
  /** n prompts drawn uniformly with replacement; one rng.next() per prompt, so draws are reproducible. */
  sample(rng: UniformSource, n: number): string[];
}

/** Activities for animal_activities, in the spirit of the paper's ("a dog riding a bike"). */
export const ACTIVITIES: readonly string[] = [
  "riding a bike",
  "playing chess",
  "washing dishes",
  "doing homework",
  "reading a book",
  "playing the piano",
  "cooking dinner",
  "flying a kite",
  "painting a picture",
  "playing soccer",
  "driving a car",
  "taking a bath",
];

// Vowel letters with a consonant sound ("a unicorn", "a ewe", "a one-eyed ..."), and a silent h
// ("an hour"): the spelling rules that matter for English nouns, as inflect's a() has them.
const CONSONANT_SOUND_VOWEL = /^(uni|use|usu|uti|ure|eu|ewe|one|once|ouija)/;
const SILENT_H = /^(hour|honest|honou?r|heir)/;

/** "a" or "an" for a noun phrase, by its first word's sound. */
export function indefiniteArticle(noun: string): "a" | "an" {
  const w = noun.trim().toLowerCase();
  if (SILENT_H.test(w)) return "an";
  if (CONSONANT_SOUND_VOWEL.test(w)) return "a";
  return /^[aeiou]/.test(w) ? "an" : "a";
}

/** "an owl", "a tiger", "a unicorn face". */
export function withArticle(noun: string): string {
  return `${indefiniteArticle(noun)} ${noun}`;
}

/** A prompt set over a fixed list of distinct prompts. */
export function promptSetFromList(name: string, description: string, prompts: readonly string[]): PromptSet {
  const list = Object.freeze([...new Set(prompts)]);
  if (list.length === 0) throw new Error(`prompt set ${name} is empty`);
  return {
    name,
    description,
    prompts: list,
    sample(rng: UniformSource, n: number): string[] {
      if (!Number.isInteger(n) || n < 0) throw new RangeError(`prompt set ${name}: cannot sample ${n} prompts`);
      return Array.from({ length: n }, () => {
        const u = rng.next();
        if (!(u >= 0 && u < 1)) throw new RangeError(`prompt set ${name}: rng.next() returned ${u}, not in [0, 1)`);
        return list[Math.floor(u * list.length)]!;
      });
    },
  };
}

// Built lazily: reading the emoji packages' metadata takes a moment and most callers need one set.
const BUILDERS: Record<string, () => PromptSet> = {
  animals: () =>
    promptSetFromList("animals", "emoji animal names (the paper's simple animals)", animalNames(emojiRecords())),
  all_emoji: () =>
    promptSetFromList(
      "all_emoji",
      "every distinct emoji name",
      emojiRecords().map((r) => r.caption),
    ),
  // The unseen-animals experiment's fixed split: every third animal (in the emoji order) held out.
  animals_train: () =>
    promptSetFromList(
      "animals_train",
      "two thirds of the animal names, for training (animals_heldout holds the rest)",
      animalNames(emojiRecords()).filter((_, i) => i % 3 !== 2),
    ),
  animals_heldout: () =>
    promptSetFromList(
      "animals_heldout",
      "every third animal name, never in animals_train (the unseen-prompts check)",
      animalNames(emojiRecords()).filter((_, i) => i % 3 === 2),
    ),
  animal_activities: () =>
    promptSetFromList(
      "animal_activities",
      `"a(n) <animal> <activity>" over ${ACTIVITIES.length} activities (the paper's prompt-alignment set)`,
      animalNames(emojiRecords()).flatMap((animal) => ACTIVITIES.map((a) => `${withArticle(animal)} ${a}`)),
    ),
};

const cache = new Map<string, PromptSet>();

/** Names accepted by promptSetByName. */
export function listPromptSets(): string[] {
  return Object.keys(BUILDERS);
}

/** A set given inline, "list:cat face,tiger,frog": a run on the user's own prompts. */
export const INLINE_PROMPTS_PREFIX = "list:";
const MAX_INLINE_PROMPTS = 1000;

function inlinePromptSet(name: string): PromptSet {
  const prompts = name
    .slice(INLINE_PROMPTS_PREFIX.length)
    .split(",")
    .map((p) => p.trim());
  if (prompts.some((p) => p === ""))
    throw new Error(`prompt set "${name}": empty prompt in the list (prompts are separated by commas)`);
  if (prompts.length > MAX_INLINE_PROMPTS)
    throw new Error(`prompt set "${name.slice(0, 40)}...": ${prompts.length} prompts, at most ${MAX_INLINE_PROMPTS}`);
  return promptSetFromList(name, `the ${prompts.length} prompts given inline`, prompts);
}

/** A named set (listPromptSets), or an inline one: "list:" then prompts separated by commas. */
export function promptSetByName(name: string): PromptSet {
  const cached = cache.get(name);
  if (cached) return cached;
  if (name.startsWith(INLINE_PROMPTS_PREFIX)) return inlinePromptSet(name);
  const build = Object.hasOwn(BUILDERS, name) ? BUILDERS[name] : undefined;
  if (!build)
    throw new Error(
      `unknown prompt set "${name}"; known: ${listPromptSets().join(", ")}, or ${INLINE_PROMPTS_PREFIX}prompt 1,prompt 2,...`,
    );
  const set = build();
  cache.set(name, set);
  return set;
}
