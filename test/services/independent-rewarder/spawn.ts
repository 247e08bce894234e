// Starts the independent reward server (server.mjs) as its own process, under Node when it is
// installed (nothing of Bun's or ours in the loop), else under Bun, and reads the address it
// announces.
import type { Subprocess } from "bun";

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
  let err = "";
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) err += decoder.decode(chunk);
  })();
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { value, done } = await Promise.race([
      reader.read(),
      Bun.sleep(deadline - Date.now()).then(() => ({ value: undefined, done: true })),
    ]);
    if (done) break;
    buffered += decoder.decode(value);
    const line = buffered.split("\n").find((l) => l.startsWith("{"));
    if (line) {
      reader.releaseLock();
      return {
        address: (JSON.parse(line) as { address: string }).address,
        proc,
        stderr: () => err,
        stop: async () => {
          proc.kill("SIGTERM");
          await proc.exited;
        },
      };
    }
  }
  proc.kill("SIGKILL");
  throw new Error(`independent rewarder did not announce its address: ${err}`);
}
