import { afterAll, describe, expect, test } from "bun:test";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import pg from "pg";
import { resolveDatabase, startDatabase } from "../../services/lib/db/database.ts";
import { EmbeddedPostgresServer, findFreePort } from "../../services/lib/db/embedded.ts";
import { createRun, getRun } from "../../services/lib/db/queries.ts";
import { tempDataDir } from "./postgres.ts";

const folders: string[] = [];
async function scratch(): Promise<string> {
  const dir = await tempDataDir();
  folders.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of folders) await rm(dir, { recursive: true, force: true });
});

async function query(url: string, text: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

describe("EmbeddedPostgresServer", () => {
  test("data survives a restart; a second server on the same folder is refused; stop is safe twice", async () => {
    const dataDir = join(await scratch(), "db");
    const first = await EmbeddedPostgresServer.start({ dataDir, fast: true });
    try {
      expect(first.initialised).toBe(true);
      await first.ensureDatabase("ddpo");
      await first.ensureDatabase("ddpo");
      await query(first.url("ddpo"), "create table kept (v integer); insert into kept values (7), (11)");
      // postmaster.pid guards the folder: a second server must fail with the server's own reason.
      await expect(EmbeddedPostgresServer.start({ dataDir, fast: true })).rejects.toThrow(
        /could not start Postgres on 127\.0\.0\.1:\d+ with data in .*db: .*\n(.|\n)*lock file/,
      );
    } finally {
      await first.stop();
    }
    expect(first.running).toBe(false);
    await first.stop();

    const second = await EmbeddedPostgresServer.start({ dataDir, fast: true });
    try {
      expect(second.initialised).toBe(false);
      expect(await query(second.url("ddpo"), "select v from kept order by v")).toEqual([{ v: 7 }, { v: 11 }]);
    } finally {
      await second.stop();
    }
  });

  test("a port already in use is a clear error", async () => {
    const port = await findFreePort();
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(port, "127.0.0.1", resolve));
    try {
      await expect(EmbeddedPostgresServer.start({ dataDir: join(await scratch(), "db"), port })).rejects.toThrow(
        `port ${port} on 127.0.0.1 is already in use`,
      );
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  test("an unusable data folder is a clear error", async () => {
    const base = await scratch();
    await writeFile(join(base, "file"), "x");
    await expect(EmbeddedPostgresServer.start({ dataDir: join(base, "file") })).rejects.toThrow(
      /data directory .*file exists and is not a directory/,
    );
    await mkdir(join(base, "other"));
    await writeFile(join(base, "other", "notes.txt"), "mine");
    await expect(EmbeddedPostgresServer.start({ dataDir: join(base, "other") })).rejects.toThrow(
      /data directory .*other is not empty and holds no Postgres cluster/,
    );
  });

  test.skipIf(process.getuid?.() !== 0)("as root: a parent the postgres account cannot enter is named", async () => {
    const base = await scratch();
    await mkdir(join(base, "private"), { mode: 0o700 });
    await expect(EmbeddedPostgresServer.start({ dataDir: join(base, "private", "db") })).rejects.toThrow(
      /the postgres account \(uid \d+\) cannot enter .*private \(mode 700\)/,
    );
  });
});

describe("startDatabase", () => {
  test("DATABASE_URL wins; without it the embedded server starts, gets its database and the schema", async () => {
    const external = await resolveDatabase({ env: { DATABASE_URL: "postgres://u:p@db.example:5432/x" } });
    expect(external).toMatchObject({ url: "postgres://u:p@db.example:5432/x", embedded: null });

    const dataDir = join(await scratch(), "product");
    const first = await startDatabase({ env: {}, dataDir });
    try {
      expect(first.embedded?.initialised).toBe(true);
      expect(first.url).toMatch(/^postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/ddpo$/);
      await createRun(first.db, { id: "kept", name: "kept" });
    } finally {
      await first.close();
      await first.close();
    }
    expect(first.embedded?.running).toBe(false);
    const second = await startDatabase({ env: {}, dataDir });
    try {
      expect(second.embedded?.initialised).toBe(false);
      expect((await getRun(second.db, "kept"))?.name).toBe("kept");
    } finally {
      await second.close();
    }
  });
});
