// The dashboard's image helpers: the latent layout it infers, a row to PNG, and which run-folder
// names it will serve.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { latentLayout, latentRowBytes, latentRowPng, runFolderSample } from "../../services/dashboard/images.ts";
import { latentBlob } from "../../services/lib/db/recorder.ts";

const dir = mkdtempSync(join(tmpdir(), "ddpo-dashboard-images-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("latentLayout", () => {
  test("[T+1, C*H*W] as the Trainer records it, and [T+1, C, H, W]", () => {
    expect(latentLayout([4, 3 * 32 * 32])).toEqual({ rows: 4, channels: 3, size: 32 });
    expect(latentLayout([51, 64 * 64])).toEqual({ rows: 51, channels: 1, size: 64 });
    expect(latentLayout([11, 4, 16, 16])).toEqual({ rows: 11, channels: 4, size: 16 });
    expect(() => latentLayout([4, 1000])).toThrow("not square images");
    expect(() => latentLayout([4, 3, 8, 16])).toThrow("not square images");
  });
});

describe("latentRowPng", () => {
  test("[-1, 1] RGB planes become the pixels (v + 1) * 127.5, rounded and clamped", async () => {
    const size = 2;
    // Channel-major [3, 2, 2]: R ramps, G is -1 (0), B beyond 1 clamps to 255.
    const row = Float32Array.from([-1, -0.5, 0.5, 1, -1, -1, -1, -1, 2, 2, 2, 2]);
    const { bytes } = latentBlob(row, [1, row.length]);
    const layout = latentLayout([1, row.length]);
    expect(latentRowBytes(layout)).toBe(48);
    const png = await latentRowPng(layout, bytes);
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([size, size]);
    expect([...data]).toEqual([0, 0, 255, 64, 0, 255, 191, 0, 255, 255, 0, 255]);
    await expect(latentRowPng(layout, bytes.subarray(4))).rejects.toThrow("expected 48");
  });
});

describe("runFolderSample", () => {
  test("only samples/epoch-N.png files that really are inside the folder", () => {
    const run = join(dir, "run");
    mkdirSync(join(run, "samples"), { recursive: true });
    writeFileSync(join(run, "samples", "epoch-0001.png"), "png");
    writeFileSync(join(run, "secret.png"), "secret");
    symlinkSync(join(run, "secret.png"), join(run, "samples", "epoch-0002.png"));
    expect(runFolderSample(run, "epoch-0001.png")).toBe(join(run, "samples", "epoch-0001.png"));
    for (const name of ["epoch-0002.png", "epoch-0003.png", "../secret.png", "epoch-0001.png/..", "/etc/passwd", ""]) {
      expect(runFolderSample(run, name)).toBeNull();
    }
  });
});
