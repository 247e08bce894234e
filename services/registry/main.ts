// The Registry process: `bun run services/registry/main.ts [--address 127.0.0.1:0]`, against
// DATABASE_URL (the `ddpo up` command starts the embedded server and sets it). Migrations run at
// start-up; concurrent starts are safe.
import { migrate, openDatabase } from "../lib/db/database.ts";
import { parseServiceFlags, runServiceProcess } from "../lib/grpc/service-process.ts";
import { registryService } from "./registry-service.ts";

const url = process.env.DATABASE_URL;
if (!url) {
  console.error("registry: DATABASE_URL is not set (ddpo up sets it for the embedded server)");
  process.exit(2);
}
const database = openDatabase({ url });
await migrate(database.db);
await runServiceProcess("registry", parseServiceFlags(process.argv.slice(2)), [registryService(database.db)], () =>
  database.close(),
);
