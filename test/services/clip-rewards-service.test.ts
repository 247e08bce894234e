// The CLIP rewards through the real Rewarder process over loopback: listed, scored on real
// emoji images (any size: the CLIP processor resizes), and a misconfigured aesthetic reward
// answered with NOT_FOUND and the message that says what to configure, the service staying up.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Rewarder } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import { loadEmojiDataset } from "../../services/lib/data/emoji.ts";
import { Code, createClient, type ServiceClient } from "../../services/lib/grpc/index.ts";
import { type ServiceProcess, spawnService } from "./cluster.ts";

let proc: ServiceProcess;
let rewarder: ServiceClient<(typeof Rewarder)["method"]>;

beforeAll(async () => {
  // No aesthetic paths in the environment: a bare `aesthetic` must say so.
  proc = await spawnService("rewarder", [], { DDPO_AESTHETIC_HEAD: "", DDPO_AESTHETIC_CLIP: "" });
  rewarder = createClient(Rewarder, proc.address);
}, 60_000);

afterAll(async () => {
  rewarder?.close();
  proc?.proc.kill("SIGKILL");
  await proc?.proc.exited;
});

test("clip_alignment is served: true captions score above swapped ones", async () => {
  const listed = (await rewarder.listRewards({})).rewards.map((r) => r.name);
  expect(listed).toContain("clip_alignment[:raw][:<CLIP folder>]");
  const dataset = await loadEmojiDataset();
  const per = dataset.size * dataset.size * 3;
  const pick = [0, 200, 400, 600];
  const image = (i: number) => ({
    width: dataset.size,
    height: dataset.size,
    rgb: dataset.images.slice(i * per, (i + 1) * per),
  });
  const captions = pick.map((i) => dataset.records[i]!.caption);
  const right = await rewarder.score({
    rewardName: "clip_alignment",
    images: pick.map((i, k) => ({ prompt: captions[k]!, image: image(i) })),
  });
  const wrong = await rewarder.score({
    rewardName: "clip_alignment",
    images: pick.map((i, k) => ({ prompt: captions[(k + 1) % 4]!, image: image(i) })),
  });
  expect(right.rewardName).toBe("clip_alignment");
  const sum = (x: number[]) => x.reduce((a, b) => a + b, 0);
  expect(right.scores.every((s) => s >= 0 && s <= 100)).toBe(true);
  expect(sum(right.scores)).toBeGreaterThan(sum(wrong.scores));
});

test("odd sizes, empty and over-long prompts score; a bare aesthetic says what is missing", async () => {
  const odd = { width: 7, height: 13, rgb: new Uint8Array(7 * 13 * 3).fill(200) };
  const long = "cat ".repeat(200);
  const r = await rewarder.score({
    rewardName: "clip_alignment:raw",
    images: [
      { prompt: "", image: odd },
      { prompt: long, image: odd },
    ],
  });
  expect(r.scores.every((s) => Number.isFinite(s) && Math.abs(s) <= 1)).toBe(true);
  const error = await rewarder
    .score({ rewardName: "aesthetic", images: [{ prompt: "x", image: odd }] })
    .then(() => undefined)
    .catch((e: { code: number; message: string }) => e);
  expect(error?.code).toBe(Code.NOT_FOUND);
  expect(error?.message).toMatch(/set DDPO_AESTHETIC_HEAD and DDPO_AESTHETIC_CLIP/);
  expect((await rewarder.listRewards({})).rewards.length).toBeGreaterThan(5);
}, 30_000);
