// The shared entry point of one service process: flags for address, token and TLS, the server
// with health and reflection, one JSON line on stdout announcing the bound address (what `ddpo up`
// and the integration tests read), and a graceful stop on SIGTERM/SIGINT.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type RunningServer, startServer } from "./server.ts";
import type { BoundService } from "./service-handlers.ts";

export interface ServiceProcessFlags {
  address: string;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** --max-connection-age-s in ms (StartServerOptions.maxConnectionAgeMs). */
  maxConnectionAgeMs?: number;
  /** Flags a particular service adds (strings as given). */
  extra: Record<string, string | undefined>;
}

/**
 * Parses `--address host:port --token-file F --tls-cert F --tls-key F --max-connection-age-s S`
 * plus `extraFlags`.
 */
export function parseServiceFlags(argv: string[], extraFlags: readonly string[] = []): ServiceProcessFlags {
  const { values } = parseArgs({
    args: argv,
    options: {
      address: { type: "string" },
      "token-file": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "max-connection-age-s": { type: "string" },
      ...Object.fromEntries(extraFlags.map((f) => [f, { type: "string" as const }])),
    },
    strict: true,
  });
  // The token comes from a file or the environment, never argv (visible in `ps`).
  const tokenFile = values["token-file"] as string | undefined;
  const token = tokenFile ? readFileSync(tokenFile, "utf8").trim() : process.env.DDPO_TOKEN || undefined;
  const age = values["max-connection-age-s"] as string | undefined;
  const ageS = Number(age);
  if (age !== undefined && !(age.trim() !== "" && ageS > 0 && ageS <= 86_400)) {
    throw new Error(`--max-connection-age-s must be seconds in (0, 86400], not '${age}'`);
  }
  return {
    address: (values.address as string | undefined) ?? "127.0.0.1:0",
    ...(age === undefined ? {} : { maxConnectionAgeMs: Math.round(ageS * 1000) }),
    token,
    tlsCert: values["tls-cert"] as string | undefined,
    tlsKey: values["tls-key"] as string | undefined,
    extra: Object.fromEntries(extraFlags.map((f) => [f, (values as Record<string, unknown>)[f] as string | undefined])),
  };
}

/**
 * Serves `services` until SIGTERM/SIGINT; `onStop` runs after the server has drained (close
 * workers, flush recorders). Prints {"service", "address"} as one JSON line once listening.
 */
export async function runServiceProcess(
  name: string,
  flags: ServiceProcessFlags,
  services: readonly BoundService[],
  onStop: () => Promise<void> | void = () => {},
): Promise<RunningServer> {
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw new Error("--tls-cert and --tls-key go together");
  const server = await startServer({
    address: flags.address,
    services,
    token: flags.token,
    maxConnectionAgeMs: flags.maxConnectionAgeMs,
    tls:
      flags.tlsCert && flags.tlsKey
        ? { cert: readFileSync(flags.tlsCert), key: readFileSync(flags.tlsKey) }
        : undefined,
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await server.close();
    await onStop();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  console.log(JSON.stringify({ service: name, address: server.address, pid: process.pid }));
  return server;
}
