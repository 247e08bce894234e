// Child process for the concurrent-start test: migrate the database at argv[2], print what it applied.

import { migrate, openDatabase } from "../../services/lib/db/database.ts";

const url = process.argv[2];
if (!url) throw new Error("usage: bun test/db/migrate-process.ts <database url>");
const handle = openDatabase({ url });
try {
  const { applied } = await migrate(handle.db);
  console.log(JSON.stringify(applied));
} finally {
  await handle.close();
}
