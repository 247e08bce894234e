// The one layout of a run folder, for `ddpo train-local`, the Trainer (<data-dir>/runs/<run id>)
// and the benches (docs/DESIGN.md §2):
//   checkpoints/epoch-NNNN/   policy (lora/ or model/), optimizer.safetensors, trainer_state.json
//   samples/epoch-NNNN.png    the epoch's images captioned with their rewards
//   reports/epoch-NNNN.json   the epoch's report as it is recorded (protobuf JSON), written before
//                             its checkpoint is registered (the Trainer)
//   history.json              the epochs' reports (protobuf JSON of ddpo.v1.EpochReport), train-local
//   reward.png                the reward curve, train-local
// and the one naming of run checkpoints in the Registry: <run id>/epoch-<N>.
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { imageGridPng } from "../plots/image-grid.ts";

/** The folder name of an epoch's checkpoint and sample grid: epoch-0001. */
export function epochName(epoch: number): string {
  return `epoch-${String(epoch).padStart(4, "0")}`;
}

/** The Registry id of a run's checkpoint after `epoch`. */
export function runCheckpointId(runId: string, epoch: number): string {
  return `${runId}/epoch-${epoch}`;
}

export class RunFolder {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  /** A Trainer run's folder under its data folder. */
  static forRun(dataDir: string, runId: string): RunFolder {
    return new RunFolder(join(dataDir, "runs", runId));
  }

  checkpoint(epoch: number): string {
    return join(this.root, "checkpoints", epochName(epoch));
  }

  samples(epoch: number): string {
    return join(this.root, "samples", `${epochName(epoch)}.png`);
  }

  report(epoch: number): string {
    return join(this.root, "reports", `${epochName(epoch)}.json`);
  }

  get history(): string {
    return join(this.root, "history.json");
  }

  get rewardChart(): string {
    return join(this.root, "reward.png");
  }

  /** The newest checkpoint folder (epoch-N folders written before the 4-digit names count too). */
  latestCheckpoint(): { epoch: number; dir: string } | null {
    const dir = join(this.root, "checkpoints");
    if (!existsSync(dir)) return null;
    const epochs = readdirSync(dir)
      .filter((d) => /^epoch-\d+$/.test(d))
      .map((d) => ({ epoch: Number(d.slice(6)), dir: join(dir, d) }))
      .sort((a, b) => a.epoch - b.epoch);
    return epochs.at(-1) ?? null;
  }

  /** The epoch's images ([N, size, size, 3] uint8) as a grid, each captioned with prompt and reward. */
  async writeSamples(
    epoch: number,
    images: Uint8Array,
    size: number,
    prompts: readonly string[],
    rewards: ArrayLike<number>,
  ): Promise<void> {
    const path = this.samples(epoch);
    mkdirSync(dirname(path), { recursive: true });
    await imageGridPng(path, images, {
      cols: 8,
      scale: 3,
      height: size,
      width: size,
      captions: prompts.map((p, i) => `${p} ${rewards[i]!.toFixed(2)}`),
    });
  }
}
