// Registry handlers: checkpoints (register, get, stream their files), lineage, and run history,
// all answered from Postgres. Registering is idempotent on id; other contents under a known id
// are ALREADY_EXISTS. Checkpoint files are read only inside the checkpoint roots
// (lib/checkpoints/checkpoint-folder.ts), hashed at registration and checked against that hash when streamed.
import type { Kysely } from "kysely";
import { Registry } from "../gen/ddpo/v1/registry_pb.ts";
import {
  CheckpointDigest,
  type CheckpointRoots,
  digestFiles,
  fileChunks,
} from "../lib/checkpoints/checkpoint-folder.ts";
import {
  CheckpointConflictError,
  checkpointLineage,
  evaluationByEpoch,
  getCheckpoint,
  getRun,
  listEpochs,
  listRuns,
  registerCheckpoint,
} from "../lib/db/queries.ts";
import type { Database } from "../lib/db/schema.ts";
import { bindService, Code, checkedText, echoed, MAX_PATH_CHARS, ServiceError } from "../lib/grpc/index.ts";
import { databaseCall } from "../lib/runs/database-calls.ts";
import {
  checkpointKindFromMessage,
  checkpointMessage,
  epochMessage,
  evaluationMessages,
  runMessage,
} from "../lib/runs/run-messages.ts";

const DEFAULT_CHUNK = 1 << 20;
const MAX_CHUNK = 4 << 20;

function invalid(message: string): never {
  throw new ServiceError(Code.INVALID_ARGUMENT, message);
}

export function registryService(db: Kysely<Database>, roots: CheckpointRoots) {
  return bindService(Registry, {
    async registerCheckpoint({ checkpoint: c }) {
      if (!c) invalid("checkpoint is required");
      if (!c.id) invalid("checkpoint.id is required");
      checkedText(c.id, "checkpoint.id");
      if (c.parentId !== undefined) checkedText(c.parentId, "checkpoint.parent_id");
      if (c.runId !== undefined) checkedText(c.runId, "checkpoint.run_id");
      checkedText(c.location, "checkpoint.location", MAX_PATH_CHARS);
      // The epochs column is a 32-bit signed integer.
      if (c.epoch !== undefined && c.epoch > 0x7fffffff) invalid(`checkpoint.epoch ${c.epoch} is above 2^31 - 1`);
      const kind = checkpointKindFromMessage(c.kind);
      if (!kind) invalid("checkpoint.kind must be BASE, FULL or LORA");
      if (c.sha256 && !/^[0-9a-f]{64}$/.test(c.sha256)) {
        invalid("checkpoint.sha256 must be 64 lower-case hex digits (or empty)");
      }
      if (!c.location) invalid("checkpoint.location is required");
      if (kind !== "base" && !c.parentId) invalid(`a ${kind} checkpoint needs parent_id`);
      // The Registry hashes the files itself: what it records is what StreamCheckpoint serves.
      const location = await roots.folder(c.location, "checkpoint.location");
      const files = await roots.files(location, c.id);
      if (files.length === 0) invalid(`checkpoint.location ${c.location} holds no files`);
      const { sha256, sizeBytes } = await digestFiles(files);
      if (c.sha256 && c.sha256 !== sha256) {
        invalid(`checkpoint.sha256 ${c.sha256} does not match the files at ${c.location} (${sha256})`);
      }
      if (c.sizeBytes && c.sizeBytes !== BigInt(sizeBytes)) {
        invalid(`checkpoint.size_bytes ${c.sizeBytes} does not match the files at ${c.location} (${sizeBytes})`);
      }
      return databaseCall("RegisterCheckpoint", async () => {
        if (c.parentId && !(await getCheckpoint(db, c.parentId))) {
          throw new ServiceError(Code.NOT_FOUND, `parent checkpoint ${c.parentId} is not registered`);
        }
        if (c.runId && !(await getRun(db, c.runId))) {
          throw new ServiceError(Code.NOT_FOUND, `checkpoint.run_id: run ${c.runId} does not exist`);
        }
        const existed = await getCheckpoint(db, c.id);
        try {
          const row = await registerCheckpoint(db, {
            id: c.id,
            parent_id: c.parentId ?? null,
            run_id: c.runId ?? null,
            epoch: c.epoch ?? null,
            kind,
            sha256,
            size_bytes: sizeBytes,
            location,
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
      checkedText(id, "id");
      const row = await databaseCall("GetCheckpoint", () => getCheckpoint(db, id));
      if (!row) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${id} is not registered`);
      return { checkpoint: checkpointMessage(row) };
    },

    async *streamCheckpoint({ id, chunkBytes }, context) {
      if (!id) invalid("id is required");
      checkedText(id, "id");
      if (chunkBytes > MAX_CHUNK) invalid(`chunk_bytes ${chunkBytes} is above ${MAX_CHUNK}`);
      const row = await databaseCall("StreamCheckpoint", () => getCheckpoint(db, id));
      if (!row) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${id} is not registered`);
      // Checked again now: the roots or the folder (e.g. replaced by a link) may have changed.
      const location = await roots.folder(row.location, `checkpoint ${id}: its location`);
      const files = await roots.files(location, id);
      const chunk = chunkBytes || DEFAULT_CHUNK;
      const digest = new CheckpointDigest();
      for (const file of files) {
        digest.beginFile(file);
        let offset = 0;
        for await (const data of fileChunks(file, chunk)) {
          if (context.signal.aborted) return;
          digest.update(data);
          yield { path: file.path, offset: BigInt(offset), data, fileSize: BigInt(file.size) };
          offset += data.byteLength;
        }
      }
      if (digest.hex() !== row.sha256 || digest.sizeBytes !== row.size_bytes) {
        throw new ServiceError(
          Code.DATA_LOSS,
          `checkpoint ${id}: the files at ${row.location} changed since registration (sha256 ${digest.hex()}, registered ${row.sha256})`,
        );
      }
    },

    async getLineage({ checkpointId }) {
      if (!checkpointId) invalid("checkpoint_id is required");
      checkedText(checkpointId, "checkpoint_id");
      const chain = await databaseCall("GetLineage", () => checkpointLineage(db, checkpointId));
      if (chain.length === 0) throw new ServiceError(Code.NOT_FOUND, `checkpoint ${checkpointId} is not registered`);
      return { ancestry: chain.map(checkpointMessage) };
    },

    async listRuns({ pageSize, pageToken }) {
      const size = Math.min(pageSize || 50, 500);
      // Tokens this service gives are offsets; nine digits keep LIMIT well inside Postgres's bigint.
      const offset = pageToken && /^\d{1,9}$/.test(pageToken) ? Number(pageToken) : pageToken ? -1 : 0;
      if (offset < 0) invalid(`page_token '${echoed(pageToken)}' is not one this service gave`);
      return databaseCall("ListRuns", async () => {
        const runs = await listRuns(db, { limit: offset + size + 1 });
        const page = runs.slice(offset, offset + size);
        const messages = await Promise.all(page.map(async (r) => runMessage(r, await listEpochs(db, r.id))));
        return { runs: messages, nextPageToken: runs.length > offset + size ? String(offset + size) : "" };
      });
    },

    async getRun({ runId }) {
      if (!runId) invalid("run_id is required");
      checkedText(runId, "run_id");
      return databaseCall("GetRun", async () => {
        const run = await getRun(db, runId);
        if (!run) throw new ServiceError(Code.NOT_FOUND, `run ${runId} does not exist`);
        const epochs = await listEpochs(db, runId);
        const evaluations = evaluationMessages(await evaluationByEpoch(db, runId));
        return { run: runMessage(run, epochs), epochs: epochs.map(epochMessage), evaluations };
      });
    },
  });
}
