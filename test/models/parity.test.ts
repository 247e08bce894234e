// Reference parity: the tiny diffusers UNet and transformers CLIP text encoder in test/fixtures
// (weights and fp64 reference outputs/gradients written by the Python libraries) are reproduced
// through gpu-core: outputs to < 1e-4 and every gradient to < 1e-3 relative error.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine, type Tensor } from "../../gpu-core/index.ts";
import { CLIP_TEXT_PREFIXES, loadIntoParameters, readJsonConfig } from "../../services/lib/checkpoints/model-folder.ts";
import { readSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import { clipTextForward, validateClipTextConfig } from "../../services/lib/models/clip.ts";
import { Graph } from "../../services/lib/models/graph.ts";
import type { Layers, Shaped } from "../../services/lib/models/layers.ts";
import { allocateParameters, listParameters, parameterSource } from "../../services/lib/models/parameters.ts";
import { unetForward, validateUNetConfig } from "../../services/lib/models/unet.ts";

const FIXTURES = join(import.meta.dir, "..", "fixtures");
const engine = Engine.open();
afterAll(() => engine.close());

function norm(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! ** 2;
  return Math.sqrt(s);
}

function relErr(mine: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(mine.length).toBe(ref.length);
  let d = 0;
  for (let i = 0; i < ref.length; i++) {
    expect(Number.isFinite(mine[i]!)).toBe(true);
    d += (mine[i]! - ref[i]!) ** 2;
  }
  return Math.sqrt(d) / norm(ref);
}

interface Case {
  dir: string;
  weights: string;
  output: string;
  inputs: (io: Map<string, { shape: readonly number[]; data: Float32Array | Int32Array }>) => {
    tensors: Record<string, Tensor>;
    grads: string[]; // input names whose gradient the fixture holds (as grad.<name>)
  };
  define: (cfg: Record<string, unknown>, L: Layers<Shaped>, x: Record<string, Shaped>) => Shaped;
}

const cases: Record<string, Case> = {
  unet_tiny: {
    dir: "unet_tiny",
    weights: "diffusion_pytorch_model.safetensors",
    output: "out",
    inputs: (io) => ({
      tensors: {
        sample: engine.fromArray(io.get("sample")!.data, io.get("sample")!.shape),
        timestep: engine.fromArray(io.get("timestep")!.data, io.get("timestep")!.shape),
        encoder_hidden_states: engine.fromArray(
          io.get("encoder_hidden_states")!.data,
          io.get("encoder_hidden_states")!.shape,
        ),
      },
      grads: ["sample", "encoder_hidden_states"],
    }),
    define: (cfg, L, x) => unetForward(L, validateUNetConfig(cfg), x.sample!, x.timestep!, x.encoder_hidden_states!),
  },
  clip_text_tiny: {
    dir: "clip_text_tiny",
    weights: "model.safetensors",
    output: "last_hidden_state",
    inputs: (io) => ({
      tensors: { input_ids: engine.fromInt32(Array.from(io.get("input_ids")!.data), io.get("input_ids")!.shape) },
      grads: [],
    }),
    define: (cfg, L, x) => clipTextForward(L, validateClipTextConfig(cfg), x.input_ids!),
  },
};

describe("reference parity with diffusers / transformers", () => {
  for (const [label, c] of Object.entries(cases)) {
    test(label, () => {
      const dir = join(FIXTURES, c.dir);
      const cfg = readJsonConfig(join(dir, "config.json"));
      const io = readSafetensors(join(dir, "io.safetensors")).tensors;
      const { tensors, grads } = c.inputs(io as never);
      const shapes = listParameters((L) => {
        const x: Record<string, Shaped> = {};
        for (const [k, t] of Object.entries(tensors)) x[k] = L.input(t.shape);
        c.define(cfg, L, x);
      });
      const params = allocateParameters(engine, shapes);
      // Every name and shape the config implies is in the file, and nothing else.
      loadIntoParameters(params, join(dir, c.weights), { stripPrefix: CLIP_TEXT_PREFIXES });
      const arena = engine.arena(1 << 24);
      const g = new Graph(engine, parameterSource(params), arena);
      for (const name of grads) g.requireGrad(tensors[name]!);
      const out = c.define(cfg, g as unknown as Layers<Shaped>, tensors) as Tensor;
      const outErr = relErr(out.read(), io.get(c.output)!.data);
      expect(outErr).toBeLessThan(1e-4);

      params.zeroGrad();
      const probe = io.get("probe")!;
      g.backward(out, engine.fromArray(probe.data, probe.shape, { arena }));
      // Gradients that vanish analytically (the key-projection bias: softmax is invariant to a
      // shift of all keys) are compared in absolute terms against the largest gradient.
      const all = shapes.map((s) => ({
        name: s.name,
        mine: params.grad(s.name).read(),
        ref: io.get(`grad.${s.name}`)!.data,
      }));
      const scale = Math.max(...all.map((a) => norm(a.ref)));
      let worst = { name: "", err: 0 };
      for (const a of all) {
        const refNorm = norm(a.ref);
        const err = refNorm > 1e-8 * scale ? relErr(a.mine, a.ref) : norm(a.mine) / scale;
        if (err > worst.err) worst = { name: a.name, err };
      }
      for (const name of grads) {
        const err = relErr(g.gradOf(tensors[name]!)!.read(), io.get(`grad.${name}`)!.data);
        if (err > worst.err) worst = { name, err };
      }
      // The same model for inference (frozen parameters, no input gradient): ops fused for
      // inference (the UNet's feed-forwards) must give the same output.
      const gi = new Graph(engine, parameterSource(params, { frozen: true }), arena);
      const inferErr = relErr(
        (c.define(cfg, gi as unknown as Layers<Shaped>, tensors) as Tensor).read(),
        io.get(c.output)!.data,
      );
      gi.dispose();
      console.log(
        `${label}: output rel err ${outErr.toExponential(2)} (inference ${inferErr.toExponential(2)}), worst gradient ${worst.err.toExponential(2)} (${worst.name}), ${shapes.length} parameters`,
      );
      expect(inferErr).toBeLessThan(1e-4);
      expect(worst.err).toBeLessThan(1e-3);
      g.dispose();
      arena.close();
      params.close();
      for (const t of Object.values(tensors)) t.close();
    });
  }
});
