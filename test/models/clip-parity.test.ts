// Reference parity of the CLIPModel (vision tower, text tower, projections, logit scale) with
// transformers: test/fixtures/clip_tiny holds its weights and, computed in fp64, the embeddings,
// logits, pooled features, and the gradient of pixel_values and of every parameter for
// sum(image_embeds * probe) + sum(text_embeds * probe) + sum(logits_per_image * probe).
// Also: the contrastive loss against finite differences, and transformers' text pooling rule.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { loadIntoParameters, readJsonConfig } from "../../services/lib/checkpoints/model-folder.ts";
import { readSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import {
  clipImageFeatures,
  clipLogitScale,
  clipLogits,
  clipLogitsBackward,
  clipModelDefinition,
  clipTextFeatures,
  clipTextPoolPositions,
  contrastiveLoss,
  validateClipConfig,
} from "../../services/lib/models/clip-model.ts";
import { Graph } from "../../services/lib/models/graph.ts";
import { allocateParameters, listParameters, parameterSource } from "../../services/lib/models/parameters.ts";
import { relativeError } from "./tiny-model.ts";

const DIR = join(import.meta.dir, "..", "fixtures", "clip_tiny");
const engine = Engine.open();
afterAll(() => engine.close());

function norm(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! ** 2;
  return Math.sqrt(s);
}

describe("CLIPModel parity with transformers (clip_tiny)", () => {
  test("embeddings, logits, pooled features and every gradient", () => {
    const config = validateClipConfig(readJsonConfig(join(DIR, "config.json")));
    const file = readSafetensors(join(DIR, "io.safetensors"));
    const io = file.tensors;
    expect(file.metadata.loss).toBe(
      "sum(image_embeds*probe.image_embeds) + sum(text_embeds*probe.text_embeds) + sum(logits_per_image*probe.logits_per_image)",
    );
    const get = (name: string) => {
      const t = io.get(name);
      if (!t) throw new Error(`fixture lacks ${name}`);
      return t;
    };
    const ids = get("input_ids");
    const [textRows, length] = ids.shape as [number, number];
    const shapes = listParameters((L) => clipModelDefinition(L, config, length));
    const params = allocateParameters(engine, shapes);
    // Every name and shape the config implies is in the file, and nothing else.
    loadIntoParameters(params, join(DIR, "model.safetensors"));

    const arena = engine.arena(1 << 24);
    const g = new Graph(engine, parameterSource(params), arena);
    const pixels = g.requireGrad(engine.fromArray(get("pixel_values").data, get("pixel_values").shape, { arena }));
    const idValues = Int32Array.from(ids.data);
    const idsTensor = engine.fromInt32(idValues, ids.shape, { arena });
    const poolAt = clipTextPoolPositions(idValues, length, config.text_config.eos_token_id as number);
    const imageFeatures = clipImageFeatures(g, config, pixels);
    const textFeatures = clipTextFeatures(g, config, idsTensor, poolAt);
    const logitScale = clipLogitScale(g, config);
    const head = clipLogits(imageFeatures.read(), textFeatures.read(), config.projection_dim, logitScale.read()[0]!);

    const forward: Record<string, number> = {
      vision_pooled: relativeError(imageFeatures.read(), get("vision_pooled").data),
      text_pooled: relativeError(textFeatures.read(), get("text_pooled").data),
      image_embeds: relativeError(head.imageEmbeds, get("image_embeds").data),
      text_embeds: relativeError(head.textEmbeds, get("text_embeds").data),
      logits_per_image: relativeError(head.logitsPerImage, get("logits_per_image").data),
    };
    expect(head.textRows).toBe(textRows);

    params.zeroGrad();
    const d = clipLogitsBackward(head, {
      imageEmbeds: get("probe.image_embeds").data,
      textEmbeds: get("probe.text_embeds").data,
      logitsPerImage: get("probe.logits_per_image").data,
    });
    g.backwardFrom([
      [imageFeatures, engine.fromArray(d.imageFeatures, imageFeatures.shape, { arena })],
      [textFeatures, engine.fromArray(d.textFeatures, textFeatures.shape, { arena })],
      [logitScale, engine.fromArray([d.logitScale], [1], { arena })],
    ]);
    // Gradients that vanish analytically (key-projection biases: softmax ignores a shift of all
    // keys) are compared in absolute terms against the largest gradient.
    const grads: Array<{ name: string; mine: ArrayLike<number>; ref: ArrayLike<number> }> = shapes.map((s) => ({
      name: s.name,
      mine: params.grad(s.name).read(),
      ref: get(`grad.${s.name}`).data,
    }));
    grads.push({ name: "pixel_values", mine: g.gradOf(pixels)!.read(), ref: get("grad.pixel_values").data });
    const scale = Math.max(...grads.map((a) => norm(a.ref)));
    let worst = { name: "", err: 0 };
    for (const a of grads) {
      expect(a.mine.length).toBe(a.ref.length);
      expect(Array.from(a.mine).every(Number.isFinite)).toBe(true);
      const refNorm = norm(a.ref);
      const err = refNorm > 1e-8 * scale ? relativeError(a.mine, a.ref) : norm(a.mine) / scale;
      if (err > worst.err) worst = { name: a.name, err };
    }
    const worstForward = Math.max(...Object.values(forward));
    console.log(
      `clip_tiny: ${Object.entries(forward)
        .map(([k, v]) => `${k} ${v.toExponential(2)}`)
        .join(", ")}; worst of ${grads.length} gradients ${worst.err.toExponential(2)} (${worst.name})`,
    );
    expect(worstForward).toBeLessThan(1e-4);
    expect(worst.err).toBeLessThan(1e-3);
    g.dispose();
    arena.close();
    params.close();
  });
});

describe("CLIP head", () => {
  test("text pooling follows transformers: argmax for the legacy eos id 2, else the first eos", () => {
    const ids = [1, 9, 4, 2, 0, 0, 1, 5, 7, 7, 2, 0];
    expect([...clipTextPoolPositions(ids, 6, 2)]).toEqual([1, 2]);
    expect([...clipTextPoolPositions(ids, 6, 7)]).toEqual([0, 2]);
    expect([...clipTextPoolPositions([1, 5, 9, 0], 4, 9)]).toEqual([2]);
  });

  test("contrastive loss and its gradient through the head match finite differences", () => {
    const dim = 5;
    const rnd = (n: number, seed: number) =>
      Float64Array.from({ length: n }, (_, i) => Math.sin(seed * 7.3 + i * 1.91));
    const image = rnd(4 * dim, 1);
    const text = rnd(3 * dim, 2);
    const labels = [0, 2, 1, 2]; // text 2 has two images
    const lossOf = (img: ArrayLike<number>, txt: ArrayLike<number>, ls: number) => {
      const h = clipLogits(img, txt, dim, ls);
      return contrastiveLoss(h.logitsPerImage, 4, 3, labels).loss;
    };
    const head = clipLogits(image, text, dim, 1.3);
    const { loss, dLogits } = contrastiveLoss(head.logitsPerImage, 4, 3, labels);
    expect(loss).toBeGreaterThan(0);
    const d = clipLogitsBackward(head, { logitsPerImage: dLogits });
    const h = 1e-6;
    const numeric = (bump: (s: number) => number) => (bump(h) - bump(-h)) / (2 * h);
    for (const k of [0, 7, 13]) {
      const fd = numeric((s) => {
        const x = Float64Array.from(image);
        x[k]! += s;
        return lossOf(x, text, 1.3);
      });
      expect(Math.abs(d.imageFeatures[k]! - fd)).toBeLessThan(1e-6);
    }
    for (const k of [2, 11]) {
      const fd = numeric((s) => {
        const x = Float64Array.from(text);
        x[k]! += s;
        return lossOf(image, x, 1.3);
      });
      expect(Math.abs(d.textFeatures[k]! - fd)).toBeLessThan(1e-6);
    }
    expect(Math.abs(d.logitScale - numeric((s) => lossOf(image, text, 1.3 + s)))).toBeLessThan(1e-6);
    // Text 1 must not be the target of image 0: the loss grows with that logit.
    expect(dLogits[0 * 3 + 1]!).toBeGreaterThan(0);
    expect(() => contrastiveLoss(head.logitsPerImage, 4, 3, [0, 0, 1, 1])).toThrow(/text 2 has no image/);
  });
});
