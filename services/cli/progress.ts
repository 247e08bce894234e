// A terminal progress bar on stderr: redrawn in place on a TTY, one line every `every` updates
// otherwise (logs, CI); and the one-line summary of an epoch both `train` commands print.
import type { EpochReport } from "../gen/ddpo/v1/run_pb.ts";

export class ProgressBar {
  #last = 0;
  readonly #tty = Boolean(process.stderr.isTTY);

  constructor(
    readonly total: number,
    readonly every = 25,
  ) {}

  update(done: number, text: string): void {
    const width = 28;
    const filled = Math.round((width * done) / this.total);
    const bar = `[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${done}/${this.total} ${text}`;
    if (this.#tty) {
      process.stderr.write(`\r${bar}\x1b[K`);
      if (done === this.total) process.stderr.write("\n");
    } else if (done - this.#last >= this.every || done === this.total) {
      this.#last = done;
      process.stderr.write(`${bar}\n`);
    }
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(sec).padStart(2, "0")}s`;
}

/**
 * One line per finished epoch: reward mean ± std, loss, approx_kl, clip fraction, the KL to the
 * starting model when measured, seconds by phase.
 */
export function epochLine(e: EpochReport): string {
  return (
    `epoch ${String(e.epoch).padStart(3)}  reward ${e.rewardMean.toFixed(3)} ± ${e.rewardStd.toFixed(3)}  ` +
    `loss ${e.loss.toExponential(2)}  approx_kl ${e.approxKl.toExponential(2)}  clipfrac ${e.clipFraction.toFixed(3)}  ` +
    (e.klToReference === undefined ? "" : `kl_to_ref ${e.klToReference.toExponential(2)}  `) +
    `${formatSeconds(e.seconds)} (sample ${e.samplingS.toFixed(1)} s, reward ${e.rewardS.toFixed(1)} s, ` +
    `train ${e.trainingS.toFixed(1)} s)`
  );
}

/** One line per held-out evaluation: the mean of each metric. */
export function evaluationLine(epoch: number, means: Readonly<Record<string, number>>): string {
  const parts = Object.entries(means).map(([metric, mean]) => `${metric} ${mean.toFixed(4)}`);
  return `held-out epoch ${String(epoch).padStart(3)}  ${parts.join("  ")}`;
}
