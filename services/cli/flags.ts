// Command-line values: every `ddpo` command declares its flags once (type, what it is, its
// default), parses them here, and answers --help (or -h) from the same declaration.
import { parseArgs } from "node:util";

/** A number flag: the default when absent, a clear error when not a finite number (or integer). */
export function numberFlag(v: string | undefined, fallback: number, name: string, integer = false): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name} must be ${integer ? "an integer" : "a number"}, got '${v}'`);
  }
  return n;
}

export interface FlagSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  /** What the flag is, for --help. */
  help: string;
  /** Shown in --help; the command applies it (absent: no default, or described in `help`). */
  default?: string | number | boolean;
  /** Placeholder of the value in --help (VALUE when absent). */
  value?: string;
}

type FlagValue<F extends FlagSpec> = F["type"] extends "boolean"
  ? boolean
  : F["multiple"] extends true
    ? string[]
    : string;

export interface ParsedFlags<T extends Record<string, FlagSpec>> {
  values: { [K in keyof T]?: FlagValue<T[K]> };
  positionals: string[];
}

/** The flags every resumable training command (pretrain, train-clip) shares, with its defaults. */
export function trainingFlags(
  outHelp: string,
  d: { steps: number; batchSize: number; lr: number; seed: number; checkpointEvery: number },
) {
  return {
    out: { type: "string", value: "DIR", help: `${outHelp}; required` },
    "state-dir": { type: "string", value: "DIR", help: "training state, for resuming", default: "OUT.training" },
    steps: { type: "string", value: "N", help: "optimizer steps", default: d.steps },
    batch: { type: "string", value: "N", help: "images per batch", default: d.batchSize },
    lr: { type: "string", value: "X", help: "peak learning rate", default: d.lr },
    seed: { type: "string", value: "N", help: "seed of initialisation, batches and noise", default: d.seed },
    "checkpoint-every": { type: "string", value: "N", help: "steps between saved states", default: d.checkpointEvery },
    fresh: { type: "boolean", help: "start over instead of resuming the state folder" },
  } as const satisfies Record<string, FlagSpec>;
}

/** The --help text of a command: its usage line, then one line per flag with its default. */
export function helpText(usage: string, flags: Record<string, FlagSpec>): string {
  const rows = Object.entries(flags).map(([name, f]) => {
    const head = `--${name}${f.type === "string" ? ` ${f.value ?? "VALUE"}` : ""}`;
    const notes = [f.multiple ? "repeatable" : "", f.default !== undefined ? `default: ${f.default}` : ""].filter(
      Boolean,
    );
    return [head, `${f.help}${notes.length ? ` (${notes.join("; ")})` : ""}`] as const;
  });
  const width = Math.min(28, Math.max(...rows.map(([h]) => h.length)) + 2);
  const lines = rows.map(
    ([h, text]) => `  ${h.padEnd(width)}${h.length >= width ? `\n  ${" ".repeat(width)}` : ""}${text}`,
  );
  // Usage strings are column-aligned in `ddpo`'s overview; one space after the command here.
  return `usage: ${usage.replace(/^(ddpo \S+) +/, "$1 ")}\n\nflags:\n${lines.join("\n")}\n  ${"--help, -h".padEnd(width)}this text`;
}

/**
 * Parses a command's flags; null after printing the help when --help or -h is among them (the
 * command then returns). Unknown flags are an error naming them.
 */
export function commandFlags<T extends Record<string, FlagSpec>>(
  usage: string,
  argv: string[],
  flags: T,
  options: { positionals?: boolean } = {},
): ParsedFlags<T> | null {
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(helpText(usage, flags));
    return null;
  }
  const parsed = parseArgs({
    args: argv,
    allowPositionals: options.positionals ?? false,
    options: Object.fromEntries(
      Object.entries(flags).map(([name, f]) => [name, { type: f.type, multiple: f.multiple ?? false }]),
    ),
  });
  return { values: parsed.values as ParsedFlags<T>["values"], positionals: parsed.positionals };
}
