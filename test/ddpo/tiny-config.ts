// The DdpoConfig of the in-process trainer tests: 4 samples x 4 DDIM steps, minibatches of 2, no
// per-prompt statistics. Guidance is pinned at 3: the project's default is unguided (the shipped
// model draws best that way), and these tests are what covers the guided path (two UNet passes
// per step, the reference forward of the KL term with the same guidance).
import { DDPO_DEFAULTS, type DdpoConfig } from "../../services/lib/ddpo/trainer.ts";

export function tinyDdpoConfig(overrides: Partial<DdpoConfig> = {}): DdpoConfig {
  return {
    ...DDPO_DEFAULTS,
    guidance: 3,
    sampleBatchSize: 4,
    sampleBatchesPerEpoch: 1,
    steps: 4,
    trainBatchSize: 2,
    gradientAccumulation: 2,
    statTracking: null,
    ...overrides,
  };
}
