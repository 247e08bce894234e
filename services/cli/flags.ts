// Command-line values: a number flag parsed once, the same way, for every `ddpo` command.

/** A number flag: the default when absent, a clear error when not a finite number (or integer). */
export function numberFlag(v: string | undefined, fallback: number, name: string, integer = false): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name} must be ${integer ? "an integer" : "a number"}, got '${v}'`);
  }
  return n;
}
