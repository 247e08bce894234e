// The Rewarder process: `bun run services/rewarder/main.ts [--address 127.0.0.1:0]`.
import { parseServiceFlags, runServiceProcess } from "../lib/grpc/service-process.ts";
import { rewarderService } from "./rewarder-service.ts";

await runServiceProcess("rewarder", parseServiceFlags(process.argv.slice(2)), [rewarderService()]);
