// Conversions between the database rows (services/lib/db) and the ddpo.v1 messages, and between
// the DdpoConfig message (every field optional) and the trainer's DdpoConfig (defaults filled in,
// validated). The Trainer stores a run's settings in runs.config as the protobuf JSON of a
// ddpo.v1.RunSettings message (runSettingsJson / runSettingsFromJson).
import { create, fromJson, type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { CheckpointKind, RunStatus } from "../../gen/ddpo/v1/common_pb.ts";
import type { Checkpoint as CheckpointMessage } from "../../gen/ddpo/v1/registry_pb.ts";
import { CheckpointSchema } from "../../gen/ddpo/v1/registry_pb.ts";
import {
  type DdpoConfig as DdpoConfigMessage,
  DdpoConfigSchema,
  DdpoLoss,
  type EpochReport,
  EpochReportSchema,
  type EvaluationReport,
  EvaluationReportSchema,
  type Run as RunMessage,
  RunSchema,
  RunSettingsSchema,
} from "../../gen/ddpo/v1/run_pb.ts";
import type {
  Checkpoint,
  CheckpointKind as DbKind,
  RunStatus as DbStatus,
  Epoch,
  NewEpoch,
  RewardSpec,
  Run,
  RunEvaluationByEpoch,
} from "../db/schema.ts";
import { CONTENT_TOP1 } from "../ddpo/evaluation.ts";
import { DDPO_DEFAULTS, type DdpoConfig, type DdpoLoss as Loss, validateConfig } from "../ddpo/trainer.ts";

/** A run's settings as the Trainer uses them; runs.config holds them as a RunSettings message. */
export interface RunSettings {
  ddpo: DdpoConfig;
  baseModelDir: string;
  epochs: number;
  /** As the client gave them; empty: the Trainer's default Samplers wherever they are when it runs. */
  samplerEndpoints: string[];
  /** Where the run's checkpoints are written. */
  runDir: string;
}

const STATUS_TO_MESSAGE: Record<DbStatus, RunStatus> = {
  pending: RunStatus.PENDING,
  running: RunStatus.RUNNING,
  stopped: RunStatus.STOPPED,
  finished: RunStatus.COMPLETED,
  failed: RunStatus.FAILED,
};

const KIND_TO_MESSAGE: Record<DbKind, CheckpointKind> = {
  base: CheckpointKind.BASE,
  full: CheckpointKind.FULL,
  lora: CheckpointKind.LORA,
};

const LOSSES: [DdpoLoss, Loss][] = [
  [DdpoLoss.IS, "ddpo_is"],
  [DdpoLoss.SF, "ddpo_sf"],
  [DdpoLoss.RWR, "rwr"],
  [DdpoLoss.SPARSE_RWR, "sparse_rwr"],
];

/** The ddpo.v1 status of a run's recorded status (the one mapping of the two). */
export function runStatusMessage(status: DbStatus): RunStatus {
  return STATUS_TO_MESSAGE[status];
}

/** A run status for people: the enum's name in lower case ("completed"). */
export function runStatusName(status: RunStatus): string {
  return RunStatus[status]?.toLowerCase() ?? "?";
}

export function checkpointKindFromMessage(kind: CheckpointKind): DbKind | null {
  const found = Object.entries(KIND_TO_MESSAGE).find(([, v]) => v === kind);
  return found ? (found[0] as DbKind) : null;
}

export function checkpointMessage(c: Checkpoint & { best_of_run_by?: string | null }): CheckpointMessage {
  return create(CheckpointSchema, {
    bestOfRunBy: c.best_of_run_by ?? undefined,
    id: c.id,
    parentId: c.parent_id ?? undefined,
    runId: c.run_id ?? undefined,
    epoch: c.epoch ?? undefined,
    kind: KIND_TO_MESSAGE[c.kind],
    sha256: c.sha256,
    sizeBytes: BigInt(c.size_bytes),
    location: c.location,
    createdAt: timestampFromDate(c.created_at),
  });
}

export function epochMessage(e: Epoch): EpochReport {
  return create(EpochReportSchema, {
    epoch: e.epoch,
    rewardMean: e.reward_mean ?? Number.NaN,
    rewardStd: e.reward_std ?? Number.NaN,
    loss: e.loss ?? Number.NaN,
    approxKl: e.approx_kl ?? Number.NaN,
    clipFraction: e.clip_fraction ?? Number.NaN,
    klToReference: e.kl_to_reference ?? undefined,
    seconds: e.seconds ?? 0,
    samplingS: e.sampling_s ?? 0,
    rewardS: e.reward_s ?? 0,
    trainingS: e.training_s ?? 0,
    checkpointId: e.checkpoint_id ?? "",
    samples: e.samples,
  });
}

/** run_evaluation_by_epoch's rows (any order) as one EvaluationReport per epoch, in epoch order. */
export function evaluationMessages(rows: readonly RunEvaluationByEpoch[]): EvaluationReport[] {
  const byEpoch = new Map<number, RunEvaluationByEpoch[]>();
  for (const r of rows) byEpoch.set(r.epoch, [...(byEpoch.get(r.epoch) ?? []), r]);
  return [...byEpoch.keys()]
    .sort((a, b) => a - b)
    .map((epoch) =>
      create(EvaluationReportSchema, {
        epoch,
        metrics: byEpoch
          .get(epoch)!
          .sort((a, b) => (a.metric < b.metric ? -1 : a.metric > b.metric ? 1 : 0))
          .map((r) => ({ metric: r.metric, images: r.images, mean: r.mean, std: r.std, min: r.min, max: r.max })),
      }),
    );
}

/** The epochs-table row of a finished epoch's report. */
export function epochRow(runId: string, r: EpochReport): NewEpoch {
  return {
    run_id: runId,
    epoch: r.epoch,
    reward_mean: r.rewardMean,
    reward_std: r.rewardStd,
    loss: r.loss,
    approx_kl: r.approxKl,
    clip_fraction: r.clipFraction,
    kl_to_reference: r.klToReference ?? null,
    sampling_s: r.samplingS,
    reward_s: r.rewardS,
    training_s: r.trainingS,
    seconds: r.seconds,
    checkpoint_id: r.checkpointId,
    samples: r.samples,
  };
}

/** runs.config of a run: its settings as protobuf JSON (every field written, empty lists too). */
export function runSettingsJson(s: RunSettings): JsonObject {
  const message = create(RunSettingsSchema, {
    ddpo: ddpoConfigMessage(s.ddpo),
    baseModelDir: s.baseModelDir,
    epochs: s.epochs,
    samplerEndpoints: s.samplerEndpoints,
    runDir: s.runDir,
  });
  const json = toJson(RunSettingsSchema, message, { alwaysEmitImplicit: true });
  if (json === null || typeof json !== "object" || Array.isArray(json))
    throw new Error("RunSettings: not a JSON object");
  return json;
}

/** A run's settings from runs.config; throws naming the problem when they are not a RunSettings. */
export function runSettingsFromJson(config: unknown): RunSettings {
  if (!isJson(config)) throw new Error("runs.config is not JSON");
  const m = fromJson(RunSettingsSchema, config);
  return {
    ddpo: ddpoConfigFromMessage(m.ddpo),
    baseModelDir: m.baseModelDir,
    epochs: m.epochs,
    samplerEndpoints: m.samplerEndpoints,
    runDir: m.runDir,
  };
}

function isJson(v: unknown): v is JsonValue {
  if (v === null || typeof v === "string" || typeof v === "boolean") return true;
  if (typeof v === "number") return Number.isFinite(v);
  if (Array.isArray(v)) return v.every(isJson);
  return typeof v === "object" && Object.values(v).every(isJson);
}

export function runMessage(run: Run, epochs: readonly Epoch[]): RunMessage {
  // A run whose settings cannot be read is still listed, with what its row says.
  let settings: Partial<RunSettings> = {};
  try {
    settings = runSettingsFromJson(run.config);
  } catch {}
  const last = epochs.at(-1);
  return create(RunSchema, {
    id: run.id,
    name: run.name,
    status: STATUS_TO_MESSAGE[run.status],
    error: run.error ?? "",
    baseModelDir: settings.baseModelDir ?? "",
    baseCheckpointId: run.base_checkpoint_id ?? "",
    promptSet: run.prompt_set ?? "",
    epochs: settings.epochs ?? 0,
    epochsDone: epochs.length,
    rewards: (run.rewards as RewardSpec[]).map((r) => ({ endpoint: r.endpoint, rewardName: r.name, weight: r.weight })),
    config: settings.ddpo ? ddpoConfigMessage(settings.ddpo) : undefined,
    samplerEndpoints: settings.samplerEndpoints ?? [],
    latestCheckpointId: last?.checkpoint_id ?? run.base_checkpoint_id ?? "",
    codeVersion: run.code_version ?? "",
    bestCheckpointId: run.best_checkpoint_id ?? undefined,
    bestMetric: run.best_metric ?? undefined,
    createdAt: timestampFromDate(run.created_at),
    updatedAt: timestampFromDate(run.updated_at),
  });
}

export function ddpoConfigMessage(c: DdpoConfig): DdpoConfigMessage {
  return create(DdpoConfigSchema, {
    seed: c.seed,
    loss: LOSSES.find(([, l]) => l === c.loss)![0],
    sampleBatchSize: c.sampleBatchSize,
    sampleBatchesPerEpoch: c.sampleBatchesPerEpoch,
    steps: c.steps,
    eta: c.eta,
    guidance: c.guidance,
    trainBatchSize: c.trainBatchSize,
    gradientAccumulation: c.gradientAccumulation,
    innerEpochs: c.innerEpochs,
    timestepFraction: c.timestepFraction,
    skipFinalSteps: c.skipFinalSteps,
    clipRange: c.clipRange,
    advClipMax: c.advClipMax,
    lr: c.lr,
    weightDecay: c.weightDecay,
    maxGradNorm: c.maxGradNorm,
    klCoefficient: c.klCoefficient,
    finetune: c.lora
      ? { case: "lora", value: { rank: c.lora.rank, alpha: c.lora.alpha } }
      : { case: "full", value: {} },
    advantages: c.statTracking
      ? { case: "statTracking", value: { bufferSize: c.statTracking.bufferSize, minCount: c.statTracking.minCount } }
      : { case: "batchStatistics", value: {} },
    rwrTemperature: c.rwrTemperature,
    sparseRwrPercentile: c.sparseRwrPercentile,
    evaluation: c.evaluation
      ? {
          prompts: c.evaluation.prompts,
          seeds: c.evaluation.seeds.map(BigInt),
          every: c.evaluation.every,
          stopMetric: c.evaluation.stopBelow?.metric,
          stopFraction: c.evaluation.stopBelow?.fraction,
          bestMetric: c.evaluation.bestBy ?? undefined,
        }
      : undefined,
  });
}

/** The message's fields over DDPO_DEFAULTS; throws with every problem listed when invalid. */
export function ddpoConfigFromMessage(m: DdpoConfigMessage | undefined): DdpoConfig {
  const d = DDPO_DEFAULTS;
  if (!m) return { ...d };
  let loss = d.loss;
  if (m.loss !== undefined && m.loss !== DdpoLoss.UNSPECIFIED) {
    const found = LOSSES.find(([v]) => v === m.loss);
    if (!found) throw new Error(`config.loss: unknown value ${m.loss}`);
    loss = found[1];
  }
  const c: DdpoConfig = {
    seed: m.seed ?? d.seed,
    loss,
    sampleBatchSize: m.sampleBatchSize ?? d.sampleBatchSize,
    sampleBatchesPerEpoch: m.sampleBatchesPerEpoch ?? d.sampleBatchesPerEpoch,
    steps: m.steps ?? d.steps,
    eta: m.eta ?? d.eta,
    guidance: m.guidance ?? d.guidance,
    trainBatchSize: m.trainBatchSize ?? d.trainBatchSize,
    gradientAccumulation: m.gradientAccumulation ?? d.gradientAccumulation,
    innerEpochs: m.innerEpochs ?? d.innerEpochs,
    timestepFraction: m.timestepFraction ?? d.timestepFraction,
    skipFinalSteps: m.skipFinalSteps ?? d.skipFinalSteps,
    clipRange: m.clipRange ?? d.clipRange,
    advClipMax: m.advClipMax ?? d.advClipMax,
    lr: m.lr ?? d.lr,
    weightDecay: m.weightDecay ?? d.weightDecay,
    maxGradNorm: m.maxGradNorm ?? d.maxGradNorm,
    klCoefficient: m.klCoefficient ?? d.klCoefficient,
    lora:
      m.finetune.case === "full"
        ? null
        : m.finetune.case === "lora"
          ? {
              rank: m.finetune.value.rank ?? d.lora!.rank,
              alpha: m.finetune.value.alpha ?? m.finetune.value.rank ?? d.lora!.alpha,
            }
          : d.lora,
    statTracking:
      m.advantages.case === "batchStatistics"
        ? null
        : m.advantages.case === "statTracking"
          ? {
              bufferSize: m.advantages.value.bufferSize ?? d.statTracking!.bufferSize,
              minCount: m.advantages.value.minCount ?? d.statTracking!.minCount,
            }
          : d.statTracking,
    rwrTemperature: m.rwrTemperature ?? d.rwrTemperature,
    sparseRwrPercentile: m.sparseRwrPercentile ?? d.sparseRwrPercentile,
    evaluation: m.evaluation
      ? {
          prompts: [...m.evaluation.prompts],
          // Above 2^52 stays out of range as a number, so validation refuses it.
          seeds: m.evaluation.seeds.map(Number),
          every: m.evaluation.every ?? 1,
          stopBelow:
            m.evaluation.stopMetric !== undefined || m.evaluation.stopFraction !== undefined
              ? { metric: m.evaluation.stopMetric ?? CONTENT_TOP1, fraction: m.evaluation.stopFraction ?? 0.5 }
              : null,
          bestBy: m.evaluation.bestMetric ?? null,
        }
      : d.evaluation,
  };
  validateConfig(c);
  return c;
}
