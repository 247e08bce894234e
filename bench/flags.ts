// `--name value` flags of a bench suite's arguments.

/** The value after `name`, else `fallback`. */
export function flagValue(args: readonly string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? (args[i + 1] ?? fallback) : fallback;
}
