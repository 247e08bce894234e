// Atomic file writes: bytes go to a temporary file beside the target, are fsynced, then renamed
// over it, so a crash leaves either the old file or the new one, never a torn checkpoint.
import { createHash, randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** A sibling path for staging `path` (same folder, so rename() stays on one filesystem). */
export function stagingPath(path: string, tag = "tmp"): string {
  return join(dirname(path), `.${basename(path)}.${tag}-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** Writes `parts` in order to `path` atomically; returns the sha256 hex of the bytes written. */
export function writeFileAtomic(path: string, parts: Iterable<Uint8Array>): string {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = stagingPath(path);
  const hash = createHash("sha256");
  const fd = openSync(tmp, "wx", 0o644);
  let closed = false;
  try {
    for (const part of parts) {
      hash.update(part);
      let done = 0;
      while (done < part.byteLength) {
        done += writeSync(fd, part, done, part.byteLength - done);
      }
    }
    fsyncSync(fd);
    closeSync(fd);
    closed = true;
    renameSync(tmp, path);
  } catch (err) {
    if (!closed) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  syncFolder(dirname(path));
  return hash.digest("hex");
}

/** Makes a rename inside `dir` durable; best effort (some filesystems refuse fsync on folders). */
export function syncFolder(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Durability of the folder entry is a bonus; the data itself was fsynced.
  }
}
