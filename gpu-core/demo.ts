// The engine's demo (`npm run demo` until the services land): a tiny timestep-conditioned
// conv denoiser, trained for a few AdamW steps to predict the noise added to a fixed image batch.
// Shows the pieces every model uses: flat parameters, an activation arena reset per step,
// forward, backward in reverse order, grad-norm clipping and the optimizer step.
import { Engine } from "./index.ts";
import { FlatParameters } from "./parameters.ts";

const B = 8;
const C = 3;
const S = 16; // image side
const F = 32; // feature channels
const T = 32; // timestep embedding width
const STEPS = 40;

const engine = Engine.open({ backend: "cpu" });
const params = new FlatParameters(engine, [
  { name: "conv_in.weight", shape: [F, C, 3, 3] },
  { name: "conv_in.bias", shape: [F] },
  { name: "time.weight", shape: [F, T] },
  { name: "time.bias", shape: [F] },
  { name: "norm.weight", shape: [F] },
  { name: "norm.bias", shape: [F] },
  { name: "conv_out.weight", shape: [C, F, 3, 3] },
  { name: "conv_out.bias", shape: [C] },
]);
// Kaiming-like init from the engine's Philox generator; norm scale 1.
for (const e of params.entries) {
  const v = params.value(e.name);
  if (e.name === "norm.weight") engine.fill(v, 1);
  else if (e.name.endsWith(".bias")) engine.fill(v, 0);
  else {
    engine.randn(v, 1234, e.offset);
    const fanIn = e.numel / (e.shape[0] ?? 1);
    engine.axpby(v, 0, v, 1 / Math.sqrt(fanIn));
  }
}

// Data: smooth colour gradients (a stand-in for images) and fixed noise.
const images = engine.tensor([B, C, S, S]);
const data = new Float32Array(B * C * S * S);
for (let b = 0; b < B; b++)
  for (let c = 0; c < C; c++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++)
        data[((b * C + c) * S + y) * S + x] = Math.sin((b + 1) * 0.3 * x + c) * Math.cos(0.2 * y * (c + 1));
images.write(data);

const arena = engine.arena(8 << 20);
const p = (n: string) => params.value(n);
const g = (n: string) => params.grad(n);
const started = performance.now();
let firstLoss = 0;
let lastLoss = 0;
for (let step = 1; step <= STEPS; step++) {
  const a = { arena };
  // Forward: x_t = sqrt(ab) x0 + sqrt(1-ab) eps at a per-sample noise level; predict eps.
  const noise = engine.tensor([B, C, S, S], a);
  engine.randn(noise, 99, step * noise.numel);
  const ts = engine.fromArray(
    Array.from({ length: B }, (_, i) => 100 + i * 100),
    [B],
    a,
  );
  const alphaBar = Array.from({ length: B }, (_, i) => 1 - (0.1 + 0.1 * i));
  const xt = engine.tensor([B, C, S, S], a);
  engine.copy(xt, noise);
  const per = C * S * S;
  for (let b = 0; b < B; b++) {
    const ab = alphaBar[b] ?? 1;
    const x0b = images.view(b * per, [per]);
    const xb = xt.view(b * per, [per]);
    engine.axpby(xb, Math.sqrt(ab), x0b, Math.sqrt(1 - ab));
    x0b.close();
    xb.close();
  }
  const temb = engine.tensor([B, T], a);
  engine.timestepEmbeddingForward(temb, ts, { flipSinToCos: true, freqShift: 0 });
  const tproj = engine.tensor([B, F], a);
  engine.linearForward(tproj, temb, p("time.weight"), p("time.bias"));
  const h0 = engine.tensor([B, F, S, S], a);
  engine.conv2dForward(h0, xt, p("conv_in.weight"), p("conv_in.bias"), 1, 1);
  const h1 = engine.tensor([B, F, S, S], a);
  engine.addForward(h1, h0, tproj);
  const h2 = engine.tensor([B, F, S, S], a);
  const mean = engine.tensor([B, 8], a);
  const rstd = engine.tensor([B, 8], a);
  engine.groupNormForward(h2, mean, rstd, h1, p("norm.weight"), p("norm.bias"), 8, 1e-5);
  const h3 = engine.tensor([B, F, S, S], a);
  engine.activationForward("silu", h3, h2);
  const out = engine.tensor([B, C, S, S], a);
  engine.conv2dForward(out, h3, p("conv_out.weight"), p("conv_out.bias"), 1, 1);
  const loss = engine.tensor([1], a);
  engine.mseForward(loss, out, noise);
  const lossValue = loss.read()[0] ?? Number.NaN;

  // Backward, in reverse order; parameter gradients accumulate into the flat buffer.
  params.zeroGrad();
  const dout = engine.tensor([B, C, S, S], a);
  engine.mseBackward(dout, null, 1, out, noise);
  const dh3 = engine.tensor([B, F, S, S], a);
  engine.conv2dBackward(dh3, g("conv_out.weight"), g("conv_out.bias"), dout, h3, p("conv_out.weight"), 1, 1);
  const dh2 = engine.tensor([B, F, S, S], a);
  engine.activationBackward("silu", dh2, dh3, h2);
  const dh1 = engine.tensor([B, F, S, S], a);
  engine.groupNormBackward(dh1, g("norm.weight"), g("norm.bias"), dh2, h1, mean, rstd, p("norm.weight"), null, 8);
  const dtproj = engine.tensor([B, F], a);
  engine.addBackward(null, dtproj, dh1);
  engine.linearBackward(null, g("time.weight"), g("time.bias"), dtproj, temb, p("time.weight"));
  engine.conv2dBackward(null, g("conv_in.weight"), g("conv_in.bias"), dh1, xt, p("conv_in.weight"), 1, 1);
  const norm = params.clipGradNorm(1.0);
  params.adamwStep({ lr: 3e-3, weightDecay: 1e-4 });
  arena.reset();

  if (step === 1) firstLoss = lossValue;
  lastLoss = lossValue;
  if (step === 1 || step % 10 === 0) {
    console.log(
      `step ${String(step).padStart(3)}  loss ${lossValue.toFixed(4)}  grad-norm ${norm.toFixed(3)}  ` +
        `${((performance.now() - started) / step).toFixed(1)} ms/step`,
    );
  }
}
const mem = engine.memory();
console.log(
  `gpu-core demo (${engine.backend} backend): ${params.entries.length} tensors, ${params.total} parameters in one flat buffer; ` +
    `${STEPS} AdamW steps, loss ${firstLoss.toFixed(4)} -> ${lastLoss.toFixed(4)}; ` +
    `engine memory ${(mem.inUse / 2 ** 20).toFixed(1)} MiB (peak ${(mem.peak / 2 ** 20).toFixed(1)} MiB)`,
);
params.close();
images.close();
arena.close();
engine.close();
if (!(lastLoss < firstLoss)) {
  console.error("demo: the loss did not fall");
  process.exit(1);
}
