// The DDPM noise schedule of a model (scheduler/scheduler_config.json in the diffusers layout)
// and the DDIM timestep grid used for sampling: N steps, t_k evenly spaced by s = T / N
// ("leading" spacing plus steps_offset, as in diffusers' DDIMScheduler), t' = t - s.

import { parseSchedulerConfig, type SchedulerConfig } from "../checkpoints/model-folder.ts";

/** The shipped pixel models' schedule: DDPM linear betas, DDIM sampling with steps_offset 1. */
export const PIXEL_SCHEDULER: SchedulerConfig = parseSchedulerConfig({
  _class_name: "DDIMScheduler",
  beta_schedule: "linear",
  clip_sample: true,
  set_alpha_to_one: false,
  steps_offset: 1,
});

export class NoiseSchedule {
  /** alpha_bar[t] = prod_{s<=t} (1 - beta_s), float64, t in [0, T). */
  readonly alphasCumprod: Float64Array;

  constructor(readonly config: SchedulerConfig) {
    if ((config.timestep_spacing ?? "leading") !== "leading") {
      throw new Error("scheduler config: only timestep_spacing leading is implemented");
    }
    const T = config.num_train_timesteps;
    this.alphasCumprod = new Float64Array(T);
    let prod = 1;
    for (let t = 0; t < T; t++) {
      const f = t / (T - 1);
      const beta =
        config.beta_schedule === "linear"
          ? config.beta_start + f * (config.beta_end - config.beta_start)
          : (Math.sqrt(config.beta_start) + f * (Math.sqrt(config.beta_end) - Math.sqrt(config.beta_start))) ** 2;
      prod *= 1 - beta;
      this.alphasCumprod[t] = prod;
    }
  }

  get trainTimesteps(): number {
    return this.config.num_train_timesteps;
  }

  alphaBar(t: number): number {
    const a = this.alphasCumprod[t];
    if (a === undefined) throw new Error(`timestep ${t} is outside [0, ${this.trainTimesteps})`);
    return a;
  }

  /** The N sampling timesteps, from most to least noisy: (N-1-k) * s + steps_offset. */
  ddimTimesteps(steps: number): number[] {
    const T = this.trainTimesteps;
    if (!Number.isInteger(steps) || steps < 1 || steps > T) throw new Error(`steps must be in [1, ${T}], got ${steps}`);
    const s = Math.floor(T / steps);
    const offset = this.config.steps_offset ?? 0;
    return Array.from({ length: steps }, (_, k) => Math.min(T - 1, (steps - 1 - k) * s + offset));
  }

  /** alpha_bar at the step's target t' = t - s; below 0, diffusers' final alpha (1 or alpha_bar[0]). */
  alphaBarPrev(t: number, steps: number): number {
    const prev = t - Math.floor(this.trainTimesteps / steps);
    if (prev >= 0) return this.alphaBar(prev);
    return this.config.set_alpha_to_one ? 1 : this.alphaBar(0);
  }
}
