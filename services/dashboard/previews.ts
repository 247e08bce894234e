// One prompt and seed drawn again under each of a run's checkpoints, so the same noise can be
// followed across epochs (a run's own samples get new seeds every epoch). The Sampler draws them
// with the run's steps, guidance and eta, and the Rewarders score them with the run's reward terms;
// results are cached by (checkpoint, prompt, seed). Calls go one at a time: the Sampler holds one
// checkpoint, and a Trainer sampling meanwhile reloads its own (it retries FAILED_PRECONDITION).
import { join } from "node:path";
import sharp from "sharp";
import { Rewarder } from "../gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../gen/ddpo/v1/sampler_pb.ts";
import type { Checkpoint, Run } from "../lib/db/schema.ts";
import { type ClientOptions, Code, createClient, type ServiceClient, ServiceError } from "../lib/grpc/index.ts";
import type { RunSettings } from "../lib/runs/run-messages.ts";

export interface PreviewServices {
  sampler: string;
  /** The Rewarder for terms that name no endpoint (as the Trainer's default). */
  rewarder: string;
  clientOptions?: ClientOptions;
}

export interface Preview {
  png: Buffer;
  /** Each reward term's score (unweighted) and the weighted sum, as a run records them. */
  terms: Array<{ name: string; weight: number; value: number }>;
  reward: number;
}

const CACHE_ENTRIES = 512;

export class CheckpointPreviews {
  readonly #sampler: ServiceClient<typeof Sampler.method>;
  readonly #rewarders = new Map<string, ServiceClient<typeof Rewarder.method>>();
  readonly #cache = new Map<string, Promise<Preview>>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly services: PreviewServices) {
    this.#sampler = createClient(Sampler, services.sampler, services.clientOptions);
  }

  #rewarder(endpoint: string): ServiceClient<typeof Rewarder.method> {
    const address = endpoint || this.services.rewarder;
    let client = this.#rewarders.get(address);
    if (!client) {
      client = createClient(Rewarder, address, this.services.clientOptions);
      this.#rewarders.set(address, client);
    }
    return client;
  }

  /** The run's policy at `checkpoint` drawing `prompt` from noise `seed`, scored; cached. */
  preview(run: Run, checkpoint: Checkpoint, prompt: string, seed: number): Promise<Preview> {
    const key = JSON.stringify([checkpoint.id, run.id, prompt, seed]);
    let found = this.#cache.get(key);
    if (!found) {
      found = this.#serially(() => this.#draw(run, checkpoint, prompt, seed));
      found.catch(() => this.#cache.delete(key));
      this.#cache.set(key, found);
      if (this.#cache.size > CACHE_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    }
    return found;
  }

  #serially<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #draw(run: Run, checkpoint: Checkpoint, prompt: string, seed: number): Promise<Preview> {
    const settings = run.config as unknown as RunSettings;
    const options = { timeoutMs: 120_000, waitForReady: true };
    // The Trainer's checkpoint folders: lora/ (peft) or model/ (full weights); the base is its model folder.
    const lora = checkpoint.kind === "lora" ? join(checkpoint.location, "lora") : undefined;
    const full = checkpoint.kind === "full" ? join(checkpoint.location, "model") : undefined;
    let image: { width: number; height: number; rgb: Uint8Array } | undefined;
    // A Trainer sampling on the same Sampler may load its policy between our load and our sample
    // (FAILED_PRECONDITION): load ours again, a few times.
    for (let attempt = 1; !image; attempt++) {
      try {
        await this.#sampler.loadCheckpoint(
          { checkpointId: checkpoint.id, baseModelDir: settings.baseModelDir, loraDir: lora, fullModelDir: full },
          options,
        );
        for await (const t of this.#sampler.sample(
          {
            prompts: [prompt],
            seeds: [BigInt(seed)],
            steps: settings.ddpo.steps,
            guidance: settings.ddpo.guidance,
            eta: settings.ddpo.eta,
            checkpointId: checkpoint.id,
          },
          options,
        )) {
          image = t.image;
        }
        if (!image) throw new Error("the Sampler returned no image");
      } catch (e) {
        if (!(e instanceof ServiceError && e.code === Code.FAILED_PRECONDITION) || attempt >= 3) throw e;
      }
    }
    const terms = await Promise.all(
      run.rewards.map(async (r) => {
        const { scores } = await this.#rewarder(r.endpoint).score(
          { rewardName: r.name, images: [{ prompt, image }] },
          options,
        );
        return { name: r.name, weight: r.weight, value: scores[0]! };
      }),
    );
    const png = await sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: 3 } })
      .png()
      .toBuffer();
    return { png, terms, reward: terms.reduce((a, t) => a + t.weight * t.value, 0) };
  }

  close(): void {
    this.#sampler.close();
    for (const c of this.#rewarders.values()) c.close();
  }
}
