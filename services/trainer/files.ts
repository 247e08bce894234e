// Content hashes of checkpoint files (the Registry's sha256 column).
import { open } from "node:fs/promises";

/** sha256 (hex) and size in bytes of one file, read in 4 MiB pieces. */
export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hasher = new Bun.CryptoHasher("sha256");
  const handle = await open(path, "r");
  try {
    const buffer = new Uint8Array(4 << 20);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hasher.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { sha256: hasher.digest("hex"), size };
  } finally {
    await handle.close();
  }
}
