// AdamW over several flat parameter sets (e.g. UNet and text encoder) with one global
// gradient-norm clip across all of them, as torch.nn.utils.clip_grad_norm_ over the union.

import type { FlatParameters } from "../../../gpu-core/parameters.ts";

export interface AdamWSettings {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm limit; 0 disables clipping. */
  maxGradNorm?: number;
}

export class JointAdamW {
  constructor(readonly sets: readonly FlatParameters[]) {}

  zeroGrad(): void {
    for (const p of this.sets) p.zeroGrad();
  }

  /** Clips the global gradient norm and takes one AdamW step; returns the norm before clipping. */
  step(s: AdamWSettings, lrScale = 1): number {
    const norms = this.sets.map((p) => p.clipGradNorm(0));
    const total = Math.sqrt(norms.reduce((a, n) => a + n * n, 0));
    if (!Number.isFinite(total)) throw new Error(`gradient norm is ${total}: refusing the optimizer step`);
    const max = s.maxGradNorm ?? 0;
    if (max > 0 && total > max) {
      const coef = max / (total + 1e-6);
      for (const p of this.sets) p.engine.axpby(p.grads, 0, p.grads, coef);
    }
    for (const p of this.sets) {
      p.adamwStep({
        lr: s.lr * lrScale,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weightDecay: s.weightDecay ?? 1e-4,
      });
    }
    return total;
  }
}
