// Registry handlers: checkpoints (register, get, stream their files), lineage, and run history,
// all answered from Postgres. Registering is idempotent on id; other contents under a known id
// are ALREADY_EXISTS.
import { open, readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import type { Kysely } from "kysely";
import { Registry } from "../gen/ddpo/v1/registry_pb.ts";
import {
  CheckpointConflictError,
  checkpointLineage,
  getCheckpoint,
  getRun,
  listEpochs,
  listRuns,
  registerCheckpoint,
} from "../lib/db/queries.ts";
import type { Database } from "../lib/db/schema.ts";
import { bindService, Code, ServiceError } from "../lib/grpc/index.ts";
import { databaseCall } from "../lib/runs/database-calls.ts";
import { checkpointKindFromMessage, checkpointMessage, epochMessage, runMessage } from "../lib/runs/run-messages.ts";

const DEFAULT_CHUNK = 1 << 20;
const MAX_CHUNK = 4 << 20;

function invalid(message: string): never {
  throw new ServiceError(Code.INVALID_ARGUMENT, message);
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

export function registryService(db: Kysely<Database>) {
  return bindService(Registry, {
    async registerCheckpoint({ checkpoint: c }) {
      if (!c) invalid("checkpoint is required");
      if (!c.id) invalid("checkpoint.id is required");
      const kind = checkpointKindFromMessage(c.kind);
      if (!kind) invalid("checkpoint.kind must be BASE, FULL or LORA");
      if (!/^[0-9a-f]{64}$/.test(c.sha256)) invalid("checkpoint.sha256 must be 64 lower-case hex digits");
      if (!c.location) invalid("checkpoint.location is required");
      if (kind !== "base" && !c.parentId) invalid(`a ${kind} checkpoint needs parent_id`);
      return databaseCall("RegisterCheckpoint", async () => {
        if (c.parentId && !(await getCheckpoint(db, c.parentId))) {
          throw new ServiceError(Code.NOT_FOUND, `parent checkpoint ${c.parentId} is not registered`);
        }
        const existed = await getCheckpoint(db, c.id);
        try {
          const row = await registerCheckpoint(db, {
            id: c.id,
            parent_id: c.parentId ?? null,
            run_id: c.runId ?? null,
            epoch: c.epoch ?? null,
            kind,
            sha256: c.sha256,
            size_bytes: Number(c.sizeBytes),
            location: c.location,
          });
          return { checkpoint: checkpointMessage(row), created: !existed };
        } catch (e) {
          if (e instanceof CheckpointConflictError) throw new ServiceError(Code.ALREADY_EXISTS, e.message);
          throw e;
        }
      });
    },

    async getCheckpoint({ id }) {
      if (!id) invalid("id is required");
      const row = await databaseCall("GetCheckpoint", () => getCheckpoint(db, id));
      if (!row) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${id} is not registered`);
      return { checkpoint: checkpointMessage(row) };
    },

    async *streamCheckpoint({ id, chunkBytes }, context) {
      if (!id) invalid("id is required");
      if (chunkBytes > MAX_CHUNK) invalid(`chunk_bytes ${chunkBytes} is above ${MAX_CHUNK}`);
      const row = await databaseCall("StreamCheckpoint", () => getCheckpoint(db, id));
      if (!row) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${id} is not registered`);
      const info = await stat(row.location).catch(() => null);
      if (!info?.isDirectory()) {
        throw new ServiceError(Code.NOT_FOUND, `checkpoint ${id}: its folder ${row.location} is gone`);
      }
      const chunk = chunkBytes || DEFAULT_CHUNK;
      for (const path of await filesUnder(row.location)) {
        const handle = await open(path, "r");
        try {
          const size = (await handle.stat()).size;
          let offset = 0;
          do {
            if (context.signal.aborted) return;
            const buffer = new Uint8Array(Math.min(chunk, size - offset));
            const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
            yield {
              path: relative(row.location, path),
              offset: BigInt(offset),
              data: buffer.subarray(0, bytesRead),
              fileSize: BigInt(size),
            };
            offset += bytesRead;
            if (bytesRead === 0) break;
          } while (offset < size);
        } finally {
          await handle.close();
        }
      }
    },

    async getLineage({ checkpointId }) {
      if (!checkpointId) invalid("checkpoint_id is required");
      const chain = await databaseCall("GetLineage", () => checkpointLineage(db, checkpointId));
      if (chain.length === 0) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${checkpointId} is not registered`);
      return { ancestry: chain.map(checkpointMessage) };
    },

    async listRuns({ pageSize, pageToken }) {
      const size = Math.min(pageSize || 50, 500);
      const offset = pageToken ? Number(pageToken) : 0;
      if (!Number.isInteger(offset) || offset < 0) invalid(`page_token '${pageToken}' is not one this service gave`);
      return databaseCall("ListRuns", async () => {
        const runs = await listRuns(db, { limit: offset + size + 1 });
        const page = runs.slice(offset, offset + size);
        const messages = await Promise.all(page.map(async (r) => runMessage(r, await listEpochs(db, r.id))));
        return { runs: messages, nextPageToken: runs.length > offset + size ? String(offset + size) : "" };
      });
    },

    async getRun({ runId }) {
      if (!runId) invalid("run_id is required");
      return databaseCall("GetRun", async () => {
        const run = await getRun(db, runId);
        if (!run) throw new ServiceError(Code.NOT_FOUND, `run ${runId} does not exist`);
        const epochs = await listEpochs(db, runId);
        return { run: runMessage(run, epochs), epochs: epochs.map(epochMessage) };
      });
    },
  });
}
