// The Sampler process: `bun run services/sampler/main.ts [--address 127.0.0.1:0]
// [--max-connection-age-s S]` (and the token/TLS flags of every service); a client loads a policy
// with LoadCheckpoint before sampling. --max-connection-age-s: close client connections after ~S s,
// so a Trainer balancing over a dns: name re-resolves it and finds Samplers added behind it.
import { parseServiceFlags, runServiceProcess } from "../lib/grpc/service-process.ts";
import { WorkerClient } from "../lib/workers/worker-rpc.ts";
import type { SamplerWorkerHandlers } from "./engine-worker.ts";
import { samplerService } from "./sampler-service.ts";

const flags = parseServiceFlags(process.argv.slice(2));
const worker = new WorkerClient<SamplerWorkerHandlers>(new URL("./engine-worker.ts", import.meta.url));
await runServiceProcess("sampler", flags, [samplerService(worker)], () => worker.terminate());
