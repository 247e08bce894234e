// Starts the independent reward server (server.mjs) as its own process, under Node when it is
// installed (nothing of Bun's or ours in the loop), else under Bun, and reads the address it
// announces.
import type { Subprocess } from "bun";
import { readAnnouncement } from "../cluster.ts";

export interface IndependentRewarder {
  address: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** What it wrote to stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

const SERVER = new URL("./server.mjs", import.meta.url).pathname;

export async function spawnIndependentRewarder(
  address = "127.0.0.1:0",
  timeoutMs = 30_000,
): Promise<IndependentRewarder> {
  const runtime = Bun.which("node") ?? process.execPath;
  const proc = Bun.spawn([runtime, SERVER, address], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const announced = await readAnnouncement(proc, "independent rewarder", timeoutMs);
  return {
    ...announced,
    proc,
    stop: async () => {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
