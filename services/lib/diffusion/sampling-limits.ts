// The limits on one sampling request, shared by the Sampler (each Sample call) and the DDPO config
// check (a Trainer run asks its Samplers for a whole epoch per call), so StartRun refuses what the
// Sampler would refuse mid-run. They keep one request from pinning an engine for hours.

/**
 * The default classifier-free guidance scale: 1, no guidance. The shipped emoji model draws its
 * prompts best unguided (emoji-CLIP top-1 68% at 1, 70% at 1.5, 60% at 2, 24% at 3, 15% at 5: its
 * unconditional branch is blurry and guidance amplifies the difference into texture noise; see
 * models/emoji-base/README.md), and unguided sampling costs one UNet pass per step, not two.
 */
export const DEFAULT_GUIDANCE = 1;

export const SAMPLING_LIMITS = {
  /** Trajectories per call (per epoch for a run). */
  maxSamples: 4096,
  maxSteps: 1000,
  /** Images per engine batch. */
  maxBatchSize: 256,
  maxPromptChars: 1000,
} as const;

export interface SamplingRequest {
  samples: number;
  steps: number;
  guidance: number;
  eta: number;
  batchSize: number;
}

/** How the caller's message or config names each field. */
export type SamplingFieldNames = Record<keyof SamplingRequest, string>;

function inRange(name: string, v: number, max: number): string | null {
  return Number.isInteger(v) && v >= 1 && v <= max ? null : `${name} must be an integer in 1..${max}, got ${v}`;
}

/** Every problem with `r`, each naming its field as `names` says; empty when it is acceptable. */
export function samplingProblems(r: SamplingRequest, names: SamplingFieldNames): string[] {
  const problems = [
    inRange(names.samples, r.samples, SAMPLING_LIMITS.maxSamples),
    inRange(names.steps, r.steps, SAMPLING_LIMITS.maxSteps),
    inRange(names.batchSize, r.batchSize, SAMPLING_LIMITS.maxBatchSize),
  ];
  if (!(Number.isFinite(r.guidance) && r.guidance >= 1)) {
    problems.push(`${names.guidance} must be a finite number >= 1, got ${r.guidance}`);
  }
  if (!(Number.isFinite(r.eta) && r.eta > 0)) {
    problems.push(`${names.eta} must be a finite number > 0 (the policy needs a log-prob), got ${r.eta}`);
  }
  return problems.filter((p): p is string => p !== null);
}
