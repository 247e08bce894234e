// The model container: save -> load gives bit-identical outputs, the denoising loss falls when
// overfitting a handful of images, and backward agrees with finite differences on sampled
// parameters of the shipped architecture.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { WordTokenizer } from "../../services/lib/data/tokenizer.ts";
import { Graph } from "../../services/lib/models/graph.ts";
import { combineSources } from "../../services/lib/models/parameters.ts";
import { EMOJI_SCHEDULER, emojiTextEncoderConfig, emojiUNetConfig } from "../../services/lib/models/presets.ts";
import { TextToImageModel } from "../../services/lib/models/text-to-image.ts";
import { denoisingLossAndGrad } from "../../services/lib/training/denoising.ts";
import { JointAdamW } from "../../services/lib/training/optimizer.ts";
import { PRETRAIN_DEFAULTS } from "../../services/lib/training/pretrain.ts";
import { tinyModel } from "./tiny-model.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "ddpo-model-test-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

const tokenizer = WordTokenizer.fromCaptions(["cat face", "red apple", "tiger", "blue heart"]);

const smallModel = (seed: number) => tinyModel(engine, ["cat face", "red apple", "tiger", "blue heart"], seed);

/** eps for fixed inputs, frozen parameters. */
function predict(model: TextToImageModel, prompts: string[], seed: number): Float32Array {
  const size = model.unetConfig.sample_size;
  const arena = engine.arena();
  const g = new Graph(
    engine,
    combineSources(model.unetSource({ frozen: true }), model.textSource({ frozen: true })),
    arena,
  );
  const x = engine.tensor([prompts.length, 3, size, size], { arena });
  engine.randn(x, seed, 0);
  const t = engine.fromArray(
    prompts.map((_, i) => 100 + 300 * i),
    [prompts.length],
    { arena },
  );
  const { context } = model.encodePrompts(g, prompts);
  const out = model.predictNoise(g, x, t, context).read() as Float32Array;
  g.dispose();
  arena.close();
  return out;
}

describe("text-to-image model", () => {
  test("save then load gives bit-identical outputs; a truncated weight file is refused", () => {
    const model = smallModel(7);
    const before = predict(model, ["cat face", "tiger", ""], 3);
    const root = join(dir, "saved");
    const manifest = model.save(root, { note: "test" });
    expect(Object.keys(manifest.files)).toContain("unet/diffusion_pytorch_model.safetensors");
    const loaded = TextToImageModel.load(engine, root);
    const after = predict(loaded, ["cat face", "tiger", ""], 3);
    expect(Buffer.from(after.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    expect(loaded.tokenizer.vocab).toEqual(model.tokenizer.vocab);
    // Truncate the UNet weights: load refuses with a message naming the file.
    const weights = join(root, "unet", "diffusion_pytorch_model.safetensors");
    const original = readFileSync(weights);
    writeFileSync(weights, original.subarray(0, original.length - 1000));
    expect(() => TextToImageModel.load(engine, root)).toThrow(/diffusion_pytorch_model\.safetensors/);
    model.close();
    loaded.close();
  });

  test("the denoising loss falls when overfitting four images", { timeout: 120_000 }, () => {
    const model = smallModel(11);
    const optimizer = new JointAdamW([model.unet, model.textEncoder]);
    const source = combineSources(model.unetSource(), model.textSource());
    const arena = engine.arena();
    const prompts = ["cat face", "red apple", "tiger", "blue heart"];
    // Four fixed 16x16 colour patterns in [-1, 1].
    const x0 = new Float32Array(4 * 3 * 256);
    for (let i = 0; i < x0.length; i++) x0[i] = Math.sin(i * 0.37 + Math.floor(i / 768)) * 0.8;
    const losses: number[] = [];
    for (let step = 0; step < 60; step++) {
      optimizer.zeroGrad();
      const loss = denoisingLossAndGrad(model, source, arena, {
        x0,
        prompts,
        timesteps: [50, 150, 250, 350],
        noiseSeed: 5,
        noiseOffset: 0, // the same noise every step: a fixed regression target
      });
      arena.reset();
      optimizer.step({ lr: 2e-3, maxGradNorm: 1 });
      losses.push(loss);
    }
    const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
    console.log(`overfit: loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(last).toBeLessThan(0.5 * first);
    arena.close();
    model.close();
  });

  test("backward matches finite differences on sampled parameters of the shipped architecture", {
    timeout: 120_000,
  }, () => {
    const unet = { ...emojiUNetConfig(PRETRAIN_DEFAULTS.blockOutChannels, PRETRAIN_DEFAULTS.textHidden) };
    const model = TextToImageModel.create(
      engine,
      {
        unet,
        textEncoder: emojiTextEncoderConfig(tokenizer.vocabSize, PRETRAIN_DEFAULTS.textHidden),
        scheduler: EMOJI_SCHEDULER,
      },
      tokenizer,
      13,
    );
    const source = combineSources(model.unetSource(), model.textSource());
    const arena = engine.arena();
    const probe = engine.tensor([2, 3, 32, 32]);
    engine.randn(probe, 99, 0);
    const probeHost = probe.read();
    // L = sum(eps * probe) in float64 on the host.
    const lossAt = (): number => {
      const g = new Graph(engine, source, arena);
      const x = engine.tensor([2, 3, 32, 32], { arena });
      engine.randn(x, 17, 0);
      const t = engine.fromArray([250, 700], [2], { arena });
      const { context } = model.encodePrompts(g, ["cat face", "tiger"]);
      const eps = model.predictNoise(g, x, t, context).read();
      g.dispose();
      arena.reset();
      let s = 0;
      for (let i = 0; i < eps.length; i++) s += eps[i]! * probeHost[i]!;
      return s;
    };
    // Analytic gradient.
    model.unet.zeroGrad();
    model.textEncoder.zeroGrad();
    {
      const g = new Graph(engine, source, arena);
      const x = engine.tensor([2, 3, 32, 32], { arena });
      engine.randn(x, 17, 0);
      const t = engine.fromArray([250, 700], [2], { arena });
      const { context } = model.encodePrompts(g, ["cat face", "tiger"]);
      const eps = model.predictNoise(g, x, t, context);
      const seed = engine.tensor(eps.shape, { arena });
      engine.copy(seed, probe);
      g.backward(eps, seed);
      g.dispose();
      arena.reset();
    }
    const sampled = [
      ["unet", "conv_in.weight"],
      ["unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"],
      ["unet", "mid_block.resnets.0.time_emb_proj.weight"],
      ["unet", "up_blocks.1.resnets.1.conv1.weight"],
      ["unet", "up_blocks.0.attentions.0.proj_out.weight"],
      ["unet", "conv_norm_out.weight"],
      ["unet", "time_embedding.linear_1.bias"],
      ["text", "encoder.layers.1.mlp.fc1.weight"],
      ["text", "embeddings.token_embedding.weight"],
    ] as const;
    let checked = 0;
    for (const [which, name] of sampled) {
      const set = which === "unet" ? model.unet : model.textEncoder;
      // Directional derivative along the gradient: the change of L is ||g|| h, far above the
      // float32 rounding of L, so the check is sharp for the whole tensor at once.
      const grad = set.grad(name).read();
      const view = set.value(name);
      const w0 = view.read();
      const gNorm = Math.hypot(...grad);
      const wNorm = Math.hypot(...w0);
      const h = 1e-3 * Math.max(wNorm, 1e-2);
      const shifted = (sign: number) => w0.map((w, i) => w + (sign * h * grad[i]!) / gNorm);
      view.write(shifted(1));
      const up = lossAt();
      view.write(shifted(-1));
      const down = lossAt();
      view.write(w0);
      const fd = (up - down) / (2 * h);
      const rel = Math.abs(fd - gNorm) / gNorm;
      console.log(
        `fd ${name}: |g| ${gNorm.toExponential(4)}, directional difference ${fd.toExponential(4)}, rel ${rel.toExponential(2)}`,
      );
      expect(rel).toBeLessThan(1e-2);
      checked++;
    }
    expect(checked).toBe(sampled.length);
    probe.close();
    arena.close();
    model.close();
  });
});
