// LoRA on the UNet's attention projections: a fresh adapter set is the base model exactly; a
// trained one equals the base with merged weights W + (alpha/r) B A; only adapters get gradients;
// peft-layout save/load round-trips bit for bit.
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { Graph, type ParameterSource } from "../../services/lib/models/graph.ts";
import { LoraAdapterSet, mergedLoraSource } from "../../services/lib/models/lora.ts";
import { combineSources } from "../../services/lib/models/parameters.ts";
import { relativeError, tinyModel } from "./tiny-model.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "ddpo-lora-test-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});
const model = tinyModel(engine, ["cat face", "tiger"], 3);

function run(source: ParameterSource, lora: LoraAdapterSet | null, probe?: Float32Array): Float32Array {
  const arena = engine.arena();
  const g = new Graph(engine, source, arena, lora);
  const x = engine.tensor([2, 3, 16, 16], { arena });
  engine.randn(x, 8, 0);
  const t = engine.fromArray([100, 600], [2], { arena });
  const { context } = model.encodePrompts(g, ["cat face", "tiger"]);
  const eps = model.predictNoise(g, x, t, context);
  const out = eps.read() as Float32Array;
  if (probe) g.backward(eps, engine.fromArray(probe, eps.shape, { arena }));
  g.dispose();
  arena.close();
  return out;
}

const frozenBase = () => combineSources(model.unetSource({ frozen: true }), model.textSource({ frozen: true }));

const relErr = relativeError;

test("adapters cover every attention projection; a fresh set is the base model", () => {
  const lora = LoraAdapterSet.create(engine, model.unetShapes, { rank: 4, alpha: 8 }, 1);
  // 7 transformers (2 down, 1 mid, 2 + 2 up) x (attn1 + attn2) x 4 projections.
  expect(lora.modules.size).toBe(7 * 2 * 4);
  expect(lora.has("mid_block.attentions.0.transformer_blocks.0.attn2.to_k")).toBe(true);
  const base = run(frozenBase(), null);
  const adapted = run(combineSources(lora.source(), frozenBase()), lora);
  expect(Buffer.from(adapted.buffer).equals(Buffer.from(base.buffer))).toBe(true);
  lora.close();
});

test("adapted output equals the base with merged weights W + (alpha/r) B A", () => {
  const lora = LoraAdapterSet.create(engine, model.unetShapes, { rank: 4, alpha: 8 }, 1);
  engine.randn(lora.params.values, 77, 0); // non-zero B everywhere (A too)
  engine.axpby(lora.params.values, 0.05, lora.params.values, 0);
  const adapted = run(combineSources(lora.source(), frozenBase()), lora);
  // Merge on the host in float64, write into the base, run without adapters, restore.
  const saved = model.unet.values.read();
  for (const [m, [out, inF]] of lora.modules) {
    const a = lora.params.value(`${m}.lora_A.weight`).read();
    const b = lora.params.value(`${m}.lora_B.weight`).read();
    const w = model.unet.value(`${m}.weight`);
    const merged = Float64Array.from(w.read());
    for (let o = 0; o < out; o++)
      for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let r = 0; r < 4; r++) s += b[o * 4 + r]! * a[r * inF + i]!;
        merged[o * inF + i]! += lora.scale * s;
      }
    w.write(Float32Array.from(merged));
  }
  const mergedOut = run(frozenBase(), null);
  const hostMerged = model.unet.values.read();
  model.unet.values.write(saved);
  const err = relErr(adapted, mergedOut);
  console.log(`LoRA vs merged weights: rel err ${err.toExponential(2)}`);
  expect(err).toBeLessThan(1e-5);

  // The engine's merge (what sampling runs on) gives the float64 host merge's weights and output.
  const engineMerged = mergedLoraSource(engine, combineSources(lora.source(), frozenBase()), lora);
  let worstWeight = 0;
  for (const m of lora.modules.keys()) {
    const got = engineMerged.source.lookup(`${m}.weight`)!;
    expect(got.grad).toBeNull();
    const entry = model.unet.get(`${m}.weight`).entry;
    const want = hostMerged.subarray(entry.offset, entry.offset + got.value.numel);
    worstWeight = Math.max(worstWeight, relErr(got.value.read() as Float32Array, want));
  }
  const engineOut = run(engineMerged.source, null);
  engineMerged.close();
  console.log(
    `engine merge vs host merge: weights rel err ${worstWeight.toExponential(2)}, output ${relErr(engineOut, mergedOut).toExponential(2)}`,
  );
  expect(worstWeight).toBeLessThan(1e-6);
  expect(relErr(engineOut, mergedOut)).toBeLessThan(1e-5);

  // Only the adapters receive gradients; the frozen base's stay zero.
  model.unet.zeroGrad();
  lora.params.zeroGrad();
  const probe = new Float32Array(adapted.length).map((_, i) => Math.sin(i));
  run(combineSources(lora.source(), frozenBase()), lora, probe);
  const baseGrad = model.unet.grads.read();
  expect(baseGrad.every((v) => v === 0)).toBe(true);
  const loraGrad = lora.params.grads.read();
  expect(loraGrad.some((v) => v !== 0)).toBe(true);
  expect(loraGrad.every(Number.isFinite)).toBe(true);

  // peft layout round trip.
  const out = join(dir, "adapter");
  lora.save(out, { run: "test" }, "emoji-base");
  const config = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  expect(config).toMatchObject({ peft_type: "LORA", r: 4, lora_alpha: 8 });
  const loaded = LoraAdapterSet.load(engine, model.unetShapes, out);
  expect(Buffer.from(loaded.params.values.read().buffer).equals(Buffer.from(lora.params.values.read().buffer))).toBe(
    true,
  );
  const again = run(combineSources(loaded.source(), frozenBase()), loaded);
  expect(Buffer.from(again.buffer).equals(Buffer.from(adapted.buffer))).toBe(true);
  loaded.close();
  lora.close();
});

test("adapter gradients (A and B, scale included) match central differences of the loss", () => {
  const lora = LoraAdapterSet.create(engine, model.unetShapes, { rank: 4, alpha: 8 }, 3);
  engine.randn(lora.params.values, 91, 0);
  engine.axpby(lora.params.values, 0.05, lora.params.values, 0);
  const source = () => combineSources(lora.source(), frozenBase());
  const probe = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.cos(0.7 * i));
  const loss = () => run(source(), lora).reduce((s, v, i) => s + v * probe[i]!, 0);
  lora.params.zeroGrad();
  run(source(), lora, probe);
  const grad = lora.params.grads.read();
  const theta = lora.params.values.read();
  // One direction over every adapter weight, and one over the B matrices only.
  const isB = new Uint8Array(theta.length);
  for (const m of lora.modules.keys()) {
    const e = lora.params.get(`${m}.lora_B.weight`).entry;
    isB.fill(1, e.offset, e.offset + e.numel);
  }
  for (const [label, mask] of [
    ["all adapters", () => 1],
    ["B only", (i: number) => isB[i]!],
  ] as const) {
    const v = Float32Array.from(theta, (_, i) => mask(i) * Math.sin(1.3 * i + 0.5));
    const eps = 1e-2;
    const at = (sign: number) => {
      lora.params.values.write(Float32Array.from(theta, (t, i) => t + sign * eps * v[i]!));
      return loss();
    };
    const numeric = (at(1) - at(-1)) / (2 * eps);
    lora.params.values.write(theta);
    const analytic = grad.reduce((s, g, i) => s + g * v[i]!, 0);
    const err = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), 1e-6);
    console.log(
      `LoRA gradient, ${label}: analytic ${analytic.toExponential(4)} vs numeric ${numeric.toExponential(4)} (rel ${err.toExponential(2)})`,
    );
    expect(err).toBeLessThan(2e-2);
  }
  lora.close();
});
