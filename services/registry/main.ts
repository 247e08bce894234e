// The Registry process: `bun run services/registry/main.ts [--address 127.0.0.1:0] [--data-dir DIR]
// [--model-roots DIR[,DIR]]`, against DATABASE_URL (the `ddpo up` command starts the embedded
// server and sets it). Migrations run at start-up; concurrent starts are safe. Checkpoint files
// are read only under <data-dir>/runs (where the Trainer writes them) and the model roots
// (default: the repository's models/ folder, which holds the shipped base model).
import { resolve } from "node:path";
import { CheckpointRoots } from "../lib/checkpoints/checkpoint-folder.ts";
import { migrate, openDatabase, watchDatabase } from "../lib/db/database.ts";
import { parseServiceFlags, runServiceProcess } from "../lib/grpc/service-process.ts";
import { registryService } from "./registry-service.ts";

const flags = parseServiceFlags(process.argv.slice(2), ["data-dir", "model-roots"]);
const url = process.env.DATABASE_URL;
if (!url) {
  console.error("registry: DATABASE_URL is not set (ddpo up sets it for the embedded server)");
  process.exit(2);
}
const modelRoots = flags.extra["model-roots"]?.split(",").filter(Boolean) ?? [resolve(import.meta.dir, "../../models")];
const roots = new CheckpointRoots([
  resolve(flags.extra["data-dir"] ?? ".ddpo", "runs"),
  ...modelRoots.map((r) => resolve(r)),
]);
const database = openDatabase({ url });
await migrate(database.db);
let unwatch = () => {};
const server = await runServiceProcess("registry", flags, [registryService(database.db, roots)], () => {
  unwatch();
  return database.close();
});
// Health follows the database: without it the Registry cannot answer anything.
unwatch = watchDatabase(database.db, (reachable) => {
  for (const name of ["", "ddpo.v1.Registry"]) server.setServingStatus(name, reachable ? "SERVING" : "NOT_SERVING");
});
