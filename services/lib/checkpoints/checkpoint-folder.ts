// Which files a checkpoint is, and where they may be read from. For the Registry a location must
// resolve (symbolic links followed) inside one of the checkpoint roots: the runs folder of the data
// store and the model roots. The same listing is hashed at registration and streamed by
// StreamCheckpoint, so sha256/size_bytes cover exactly the bytes a client receives; the Trainer
// hashes a base model folder the same way (no roots) to name it by its contents.
import { open, readdir, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, relative, sep } from "node:path";
import { Code, ServiceError } from "../grpc/index.ts";

/** At most this many files per checkpoint, so a registration cannot walk a whole disk. */
export const MAX_CHECKPOINT_FILES = 10_000;

export interface CheckpointFile {
  /** '/'-separated, relative to the checkpoint folder. */
  path: string;
  /** The resolved file on disk (inside a root). */
  real: string;
  size: number;
}

function refuse(code: Code, message: string): never {
  throw new ServiceError(code, message);
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!isAbsolute(rel) && rel.split(sep)[0] !== "..");
}

/**
 * Folders checkpoints may live in; each is resolved again at every check (it may appear later).
 * `null`: anywhere (a process hashing a folder it reads anyway, not serving it).
 */
export class CheckpointRoots {
  constructor(readonly roots: readonly string[] | null) {}

  async #resolved(): Promise<string[]> {
    const real = await Promise.all((this.roots ?? []).map((r) => realpath(r).catch(() => null)));
    return real.filter((r): r is string => r !== null);
  }

  /** PERMISSION_DENIED unless the resolved `real` path lies inside a root. */
  async assertInside(real: string, what: string): Promise<void> {
    if (this.roots === null) return;
    const roots = await this.#resolved();
    if (!roots.some((root) => inside(root, real))) {
      refuse(Code.PERMISSION_DENIED, `${what} is outside the checkpoint roots (${this.roots.join(", ")})`);
    }
  }

  /**
   * The checkpoint folder `location` resolved: absolute, without '..' segments, an existing
   * folder inside a root. INVALID_ARGUMENT, NOT_FOUND or PERMISSION_DENIED otherwise.
   */
  async folder(location: string, field: string): Promise<string> {
    if (!isAbsolute(location)) refuse(Code.INVALID_ARGUMENT, `${field} must be an absolute path`);
    if (location.split(/[\\/]/).includes("..")) refuse(Code.INVALID_ARGUMENT, `${field} must not contain '..'`);
    const real = await realpath(location).catch(() => null);
    if (real === null) refuse(Code.NOT_FOUND, `${field}: the folder ${location} does not exist`);
    await this.assertInside(real, `${field} ${location}`);
    if (!(await stat(real)).isDirectory()) refuse(Code.INVALID_ARGUMENT, `${field}: ${location} is not a folder`);
    return real;
  }

  /**
   * The regular files under the resolved folder `dir`, in path order. Symbolic links are followed
   * only where they resolve inside a root (PERMISSION_DENIED otherwise); a link back into a folder
   * already being walked is refused as a cycle.
   */
  async files(dir: string, id: string): Promise<CheckpointFile[]> {
    const out: CheckpointFile[] = [];
    const walk = async (real: string, prefix: string, ancestors: ReadonlySet<string>) => {
      const entries = await readdir(real, { withFileTypes: true });
      for (const e of entries) {
        const path = prefix ? `${prefix}/${e.name}` : e.name;
        let target = join(real, e.name);
        if (e.isSymbolicLink()) {
          const resolved = await realpath(target).catch(() => null);
          if (resolved === null) refuse(Code.FAILED_PRECONDITION, `checkpoint ${id}: ${path} is a broken link`);
          await this.assertInside(resolved, `checkpoint ${id}: ${path} (a link)`);
          target = resolved;
        }
        const info = await stat(target);
        if (info.isDirectory()) {
          if (ancestors.has(target)) refuse(Code.FAILED_PRECONDITION, `checkpoint ${id}: ${path} links back (a cycle)`);
          await walk(target, path, new Set([...ancestors, target]));
        } else if (info.isFile()) {
          out.push({ path, real: target, size: info.size });
          if (out.length > MAX_CHECKPOINT_FILES) {
            refuse(Code.FAILED_PRECONDITION, `checkpoint ${id}: more than ${MAX_CHECKPOINT_FILES} files`);
          }
        }
      }
    };
    await walk(dir, "", new Set([dir]));
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
}

/**
 * The checkpoint digest (proto: Checkpoint.sha256): SHA-256 over, per file in path order, the
 * UTF-8 path, a NUL byte, the size in decimal, a NUL byte, then the contents.
 */
export class CheckpointDigest {
  readonly #hasher = new Bun.CryptoHasher("sha256");
  sizeBytes = 0;

  beginFile(file: CheckpointFile): void {
    this.#hasher.update(`${file.path}\0${file.size}\0`);
  }

  update(data: Uint8Array): void {
    this.#hasher.update(data);
    this.sizeBytes += data.byteLength;
  }

  hex(): string {
    return this.#hasher.digest("hex");
  }
}

/** Reads `file` in pieces of at most `chunk` bytes, in offset order (one empty piece when empty). */
export async function* fileChunks(file: CheckpointFile, chunk: number): AsyncGenerator<Uint8Array> {
  if (file.size === 0) {
    yield new Uint8Array(0);
    return;
  }
  const handle = await open(file.real, "r");
  try {
    let offset = 0;
    while (offset < file.size) {
      const buffer = new Uint8Array(Math.min(chunk, file.size - offset));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      if (bytesRead === 0) break;
      yield buffer.subarray(0, bytesRead);
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

/** sha256 and total size of a checkpoint's files, as StreamCheckpoint would send them. */
export async function digestFiles(files: readonly CheckpointFile[]): Promise<{ sha256: string; sizeBytes: number }> {
  const digest = new CheckpointDigest();
  for (const file of files) {
    digest.beginFile(file);
    for await (const data of fileChunks(file, 4 << 20)) digest.update(data);
  }
  return { sha256: digest.hex(), sizeBytes: digest.sizeBytes };
}

/** The digest of the folder at `dir` as the Registry would compute it, wherever it lies. */
export async function digestFolder(dir: string): Promise<{ sha256: string; sizeBytes: number }> {
  const anywhere = new CheckpointRoots(null);
  const folder = await anywhere.folder(dir, dir);
  return digestFiles(await anywhere.files(folder, dir));
}
