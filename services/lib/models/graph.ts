// Graph: the Layers vocabulary computed on gpu-core. Forward ops allocate activations from an
// arena and push their backward onto a tape; backward() replays the tape in reverse, writing
// activation gradients (summed when a tensor feeds several ops) and accumulating parameter
// gradients into the flat gradient buffer. Parameters without a gradient slot are frozen.
//
// Memory: activation gradients live outside the arena, each grad-map entry its own handle on a
// reference-counted storage (gpu-core frees a storage with its last handle). A tensor's gradient
// is released as soon as the tape step that consumes it has run, so backward holds only the
// gradients of the frontier, not all of them (the batch-32 training step's peak roughly halves).
// Ops whose input gradient is the output gradient itself (add, reshape, batch concat) hand on
// handles to its storage instead of copies; a gradient is summed into in place only when this
// graph owns its storage alone, otherwise the sum goes to a fresh buffer (see #commit).

import type { Activation, Arena, Engine, Tensor } from "../../../gpu-core/index.ts";
import type { Layers } from "./layers.ts";

export interface ParameterSlot {
  value: Tensor;
  grad: Tensor | null; // null: frozen
}

export interface ParameterSource {
  lookup(name: string): ParameterSlot | undefined;
}

/** LoRA adapters on linear layers: y = W x + scale * B (A x), looked up by the base layer's name. */
export interface LoraAdapters {
  scale: number;
  /** The adapted linears: module name -> [out, in] of its base weight. */
  readonly modules: ReadonlyMap<string, readonly [number, number]>;
}

export class Graph implements Layers<Tensor> {
  readonly #tape: Array<() => void> = [];
  readonly #grads = new Map<Tensor, Tensor>();
  readonly #requires = new Set<Tensor>();
  readonly #owned: Tensor[] = [];
  /** Gradient handles on heap storage that this graph must close. */
  readonly #heap = new Set<Tensor>();
  /** Gradient handles whose storage another live gradient handle shares (add's two inputs). */
  readonly #aliased = new Set<Tensor>();

  constructor(
    readonly engine: Engine,
    readonly params: ParameterSource,
    readonly arena: Arena,
    readonly lora: LoraAdapters | null = null,
  ) {}

  /** Marks an input whose gradient backward() should compute (e.g. the sample, for tests). */
  requireGrad(t: Tensor): Tensor {
    this.#requires.add(t);
    return t;
  }

  gradOf(t: Tensor): Tensor | undefined {
    return this.#grads.get(t);
  }

  /** Runs the tape backwards from `output` with upstream gradient `seed` (same shape). */
  backward(output: Tensor, seed: Tensor): void {
    this.backwardFrom([[output, seed]]);
  }

  /** Runs the tape backwards from several outputs at once (CLIP's image and text embeddings). */
  backwardFrom(seeds: ReadonlyArray<readonly [output: Tensor, seed: Tensor]>): void {
    for (const [output, seed] of seeds) {
      if (seed.shape.join() !== output.shape.join()) {
        throw new Error(`backward: seed [${seed.shape}] does not match output [${output.shape}]`);
      }
      this.#commit(output, seed);
    }
    for (let i = this.#tape.length - 1; i >= 0; i--) this.#tape[i]!();
    this.#tape.length = 0;
  }

  /** Closes views of non-arena inputs; arena tensors die with arena.reset(). */
  dispose(): void {
    for (const t of this.#owned) t.close();
    this.#owned.length = 0;
    for (const t of this.#heap) t.close();
    this.#heap.clear();
    this.#aliased.clear();
    this.#tape.length = 0;
    this.#grads.clear();
    this.#requires.clear();
  }

  // ---- plumbing ---------------------------------------------------------------------------

  #new(shape: readonly number[]): Tensor<"f32"> {
    return this.engine.tensor(shape, { arena: this.arena });
  }

  #param(name: string): ParameterSlot {
    const p = this.params.lookup(name);
    if (!p) throw new Error(`model parameter '${name}' is missing`);
    return p;
  }

  /** A view of t; views of tensors outside the arena are closed by dispose(). */
  #view(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    const v = t.view(offset, shape);
    if (!v.arena) this.#owned.push(v);
    return v;
  }

  /** Row indices [rows, cols] (i32) in the arena. */
  #ids(values: ArrayLike<number>, shape: readonly number[]): Tensor<"i32"> {
    return this.engine.fromInt32(Array.from(values), shape, { arena: this.arena });
  }

  /** y requires a gradient when any input does or any parameter is trainable. */
  #mark(y: Tensor, inputs: Tensor[], params: Array<ParameterSlot | null> = []): Tensor {
    if (inputs.some((t) => this.#requires.has(t)) || params.some((p) => p?.grad)) this.#requires.add(y);
    return y;
  }

  /** A gradient buffer on the heap, freed by #release once consumed. */
  #gradBuffer(shape: readonly number[]): Tensor<"f32"> {
    const t = this.engine.tensor(shape);
    this.#heap.add(t);
    return t;
  }

  /** Another handle on t's storage (t itself may then be released); not writable if t is not
   * (aliased, or storage this graph does not own: the caller's seed). */
  #share(t: Tensor, offset = 0, shape: readonly number[] = t.shape): Tensor {
    const v = t.view(offset, shape);
    if (!t.arena) this.#heap.add(v);
    if (!this.#writable(t)) this.#aliased.add(v);
    return v;
  }

  /** Closes a gradient handle this graph owns (the caller's seed and arena tensors are left). */
  #release(t: Tensor): void {
    this.#aliased.delete(t);
    if (this.#heap.delete(t)) t.close();
  }

  /** Whether g may be written in place: this graph's own heap storage, shared with no other
   * live gradient (never the caller's seed or a view of it). */
  #writable(g: Tensor): boolean {
    return this.#heap.has(g) && !this.#aliased.has(g);
  }

  /** A fresh buffer for x's gradient contribution, or null when x needs none. */
  #slot(x: Tensor): Tensor | null {
    return this.#requires.has(x) ? this.#gradBuffer(x.shape) : null;
  }

  /** Adds a contribution to x's gradient (the first one is kept as is, later ones are summed in:
   * in place when the prior gradient is writable, else into a fresh buffer, in one pass). */
  #commit(x: Tensor, contribution: Tensor | null): void {
    if (!contribution) return;
    const prior = this.#grads.get(x);
    if (!prior) {
      this.#grads.set(x, contribution);
      return;
    }
    if (this.#writable(prior)) this.engine.axpby(prior, 1, contribution, 1);
    else {
      const sum = this.#gradBuffer(x.shape);
      this.engine.addForward(sum, prior, contribution);
      this.#release(prior);
      this.#grads.set(x, sum);
    }
    this.#release(contribution);
  }

  /** Records a backward step that runs only when y received a gradient; y's gradient is then dropped. */
  #onBackward(y: Tensor, step: (gy: Tensor) => void): void {
    if (!this.#requires.has(y)) return;
    this.#tape.push(() => {
      const gy = this.#grads.get(y);
      if (!gy) return;
      step(gy);
      this.#grads.delete(y);
      this.#release(gy);
    });
  }

  // ---- layers ----------------------------------------------------------------------------

  linear(x: Tensor, name: string, out: number, bias = true): Tensor {
    const w = this.#param(`${name}.weight`);
    const b = bias ? this.#param(`${name}.bias`) : null;
    if (w.value.shape[0] !== out) {
      throw new Error(`${name}.weight has ${w.value.shape[0]} outputs, the model expects ${out}`);
    }
    const y = this.#new([...x.shape.slice(0, -1), out]);
    this.engine.linearForward(y, x, w.value, b?.value);
    if (this.lora?.modules.has(name)) return this.#loraLinear(y, x, name, w, b);
    this.#mark(y, [x], [w, b]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      this.engine.linearBackward(dx, w.grad, b?.grad, gy, x, w.value);
      this.#commit(x, dx);
    });
    return y;
  }

  /**
   * y (= W x + b, computed) += scale B (A x), with A [r,in], B [out,r]: the LoRA branch is summed
   * into y by the GEMM itself (accumulate), and in backward into dx, so neither direction makes
   * an [N, out] temporary or a separate add. d = scale (A x) [N, r] is kept for dB.
   */
  #loraLinear(y: Tensor, x: Tensor, name: string, w: ParameterSlot, b: ParameterSlot | null): Tensor {
    const a = this.#param(`${name}.lora_A.weight`);
    const up = this.#param(`${name}.lora_B.weight`);
    const scale = this.lora?.scale ?? 1;
    const d = this.#new([...x.shape.slice(0, -1), a.value.shape[0] ?? 0]);
    this.engine.linearForward(d, x, a.value, null);
    this.engine.axpby(d, scale, d, 0);
    this.engine.linearForward(y, d, up.value, null, true);
    this.#mark(y, [x], [w, b, a, up]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      this.engine.linearBackward(dx, w.grad, b?.grad, gy, x, w.value);
      // dB += gy^T d; then gd = scale gy B [N, r] gives dA += gd^T x and dx += gd A.
      const gd = a.grad || dx ? this.#gradBuffer(d.shape) : null;
      this.engine.linearBackward(gd, up.grad, null, gy, d, up.value);
      if (gd) {
        this.engine.axpby(gd, scale, gd, 0);
        this.engine.linearBackward(dx, a.grad, null, gd, x, a.value, true);
        this.#release(gd);
      }
      this.#commit(x, dx);
    });
    return y;
  }

  conv2d(x: Tensor, name: string, out: number, k: number, stride: number, pad: number, bias = true): Tensor {
    const w = this.#param(`${name}.weight`);
    const b = bias ? this.#param(`${name}.bias`) : null;
    const [bs, h, wd] = x.shape as [number, number, number, number];
    if (w.value.shape[0] !== out || w.value.shape[2] !== k) {
      throw new Error(`${name}.weight is [${w.value.shape}], the model expects ${out} outputs and kernel ${k}`);
    }
    const y = this.#new([
      bs,
      Math.floor((h + 2 * pad - k) / stride) + 1,
      Math.floor((wd + 2 * pad - k) / stride) + 1,
      out,
    ]);
    this.engine.conv2dForward(y, x, w.value, b?.value, stride, pad, "nhwc");
    this.#mark(y, [x], [w, b]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      this.engine.conv2dBackward(dx, w.grad, b?.grad, gy, x, w.value, stride, pad, "nhwc");
      this.#commit(x, dx);
    });
    return y;
  }

  groupNorm(x: Tensor, name: string, groups: number, eps: number, act?: "silu"): Tensor {
    const gamma = this.#param(`${name}.weight`);
    const beta = this.#param(`${name}.bias`);
    const silu = act === "silu";
    const y = this.#new(x.shape);
    const mean = this.#new([x.shape[0] ?? 1, groups]);
    const rstd = this.#new([x.shape[0] ?? 1, groups]);
    this.engine.groupNormForward(y, mean, rstd, x, gamma.value, beta.value, groups, eps, silu, "nhwc");
    this.#mark(y, [x], [gamma, beta]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      this.engine.groupNormBackward(
        dx,
        gamma.grad,
        beta.grad,
        gy,
        x,
        mean,
        rstd,
        gamma.value,
        beta.value,
        groups,
        silu,
        "nhwc",
      );
      this.#commit(x, dx);
    });
    return y;
  }

  layerNorm(x: Tensor, name: string, eps: number): Tensor {
    const gamma = this.#param(`${name}.weight`);
    const beta = this.#param(`${name}.bias`);
    const rows = x.numel / (x.shape[x.shape.length - 1] ?? 1);
    const y = this.#new(x.shape);
    const mean = this.#new([rows]);
    const rstd = this.#new([rows]);
    this.engine.layerNormForward(y, mean, rstd, x, gamma.value, beta.value, eps);
    this.#mark(y, [x], [gamma, beta]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      this.engine.layerNormBackward(dx, gamma.grad, beta.grad, gy, x, mean, rstd, gamma.value);
      this.#commit(x, dx);
    });
    return y;
  }

  act(kind: Activation, x: Tensor): Tensor {
    const y = this.#new(x.shape);
    this.engine.activationForward(kind, y, x);
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      if (dx) this.engine.activationBackward(kind, dx, gy, x);
      this.#commit(x, dx);
    });
    return y;
  }

  feedForward(x: Tensor, name: string, inner: number): Tensor {
    const proj = `${name}.net.0.proj`;
    const out = `${name}.net.2`;
    const dim = x.shape[x.shape.length - 1] ?? 0;
    // LoRA on either product: its branch needs the unfused layers.
    if (this.lora?.modules.has(proj) || this.lora?.modules.has(out)) {
      return this.linear(this.geglu(this.linear(x, proj, 2 * inner)), out, dim);
    }
    const slots = [`${proj}.weight`, `${proj}.bias`, `${out}.weight`, `${out}.bias`].map((n) => this.#param(n));
    const [w1, b1, w2, b2] = slots as [ParameterSlot, ParameterSlot, ParameterSlot, ParameterSlot];
    if (w1.value.shape.join() !== `${2 * inner},${dim}` || w2.value.shape.join() !== `${dim},${inner}`) {
      throw new Error(
        `${name}: weights [${w1.value.shape}] and [${w2.value.shape}], the model expects [${2 * inner},${dim}] and [${dim},${inner}]`,
      );
    }
    const lead = x.shape.slice(0, -1);
    const y = this.#new(x.shape);
    this.#mark(y, [x], slots);
    if (!this.#requires.has(y)) {
      // Inference: the intermediates never leave the cache.
      this.engine.gegluFeedForward(y, x, w1.value, b1.value, w2.value, b2.value);
      return y;
    }
    // Training: the intermediates are written out for the backward, which is the three layers'.
    const h = this.#new([...lead, 2 * inner]);
    const g = this.#new([...lead, inner]);
    this.engine.gegluFeedForward(y, x, w1.value, b1.value, w2.value, b2.value, h, g);
    this.#onBackward(y, (gy) => {
      const dg = this.#gradBuffer(g.shape);
      this.engine.linearBackward(dg, w2.grad, b2.grad, gy, g, w2.value);
      const dh = this.#gradBuffer(h.shape);
      this.engine.gegluBackward(dh, dg, h);
      this.#release(dg);
      const dx = this.#slot(x);
      this.engine.linearBackward(dx, w1.grad, b1.grad, dh, x, w1.value);
      this.#release(dh);
      this.#commit(x, dx);
    });
    return y;
  }

  geglu(x: Tensor): Tensor {
    const y = this.#new([...x.shape.slice(0, -1), (x.shape[x.shape.length - 1] ?? 0) / 2]);
    this.engine.gegluForward(y, x);
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      if (dx) this.engine.gegluBackward(dx, gy, x);
      this.#commit(x, dx);
    });
    return y;
  }

  attention(q: Tensor, k: Tensor, v: Tensor, heads: number, causal: boolean): Tensor {
    const [b, tq] = q.shape as [number, number, number];
    const tk = k.shape[1] ?? 0;
    const out = this.#new(q.shape);
    this.#mark(out, [q, k, v]);
    // The softmax is kept only for a backward (a sampling forward writes no [B,H,Tq,Tk] tensor).
    const probs = this.#requires.has(out) ? this.#new([b, heads, tq, tk]) : null;
    this.engine.attentionForward(out, probs, q, k, v, heads, causal);
    if (!probs) return out;
    this.#onBackward(out, (gy) => {
      const dq = this.#slot(q);
      const dk = this.#slot(k);
      const dv = this.#slot(v);
      this.engine.attentionBackward(dq, dk, dv, gy, q, k, v, probs, heads);
      this.#commit(q, dq);
      this.#commit(k, dk);
      this.#commit(v, dv);
    });
    return out;
  }

  add(a: Tensor, b: Tensor): Tensor {
    const y = this.#new(a.shape);
    this.engine.addForward(y, a, b);
    this.#mark(y, [a, b]);
    this.#onBackward(y, (gy) => {
      // da = gy exactly, and db too when b is not broadcast: gy is final once this step runs, so
      // both take handles on its storage (marked aliased when both do, so neither is summed into
      // in place). A broadcast b gets its own reduced buffer.
      const da = this.#requires.has(a) ? this.#share(gy) : null;
      let db: Tensor | null = null;
      if (this.#requires.has(b)) {
        if (b.numel === gy.numel) {
          db = this.#share(gy, 0, b.shape);
          if (da) for (const g of [da, db]) this.#aliased.add(g);
        } else {
          db = this.#gradBuffer(b.shape);
          this.engine.addBackward(null, db, gy);
        }
      }
      this.#commit(a, da);
      this.#commit(b, db);
    });
    return y;
  }

  concat(a: Tensor, b: Tensor): Tensor {
    // channels-last: the engine's dim-1 concat of [pixels, Ca] and [pixels, Cb] matrices, through
    // views closed right after the call (they would otherwise hold heap storage until dispose)
    const ca = a.shape[a.shape.length - 1] ?? 0;
    const cb = b.shape[b.shape.length - 1] ?? 0;
    const rows = ca ? a.numel / ca : 0;
    const asMatrices = (ts: Array<[Tensor, number]>, op: (m: Tensor[]) => void) => {
      const views = ts.map(([t, c]) => t.view(0, [rows, c]));
      try {
        op(views);
      } finally {
        for (const v of views) v.close();
      }
    };
    const y = this.#new([...a.shape.slice(0, -1), ca + cb]);
    asMatrices(
      [
        [y, ca + cb],
        [a, ca],
        [b, cb],
      ],
      ([my, ma, mb]) => this.engine.concatForward(my!, ma!, mb!),
    );
    this.#mark(y, [a, b]);
    this.#onBackward(y, (gy) => {
      const da = this.#gradBuffer(a.shape);
      const db = this.#gradBuffer(b.shape);
      asMatrices(
        [
          [da, ca],
          [db, cb],
          [gy, ca + cb],
        ],
        ([mda, mdb, mgy]) => this.engine.concatBackward(mda!, mdb!, mgy!),
      );
      if (this.#requires.has(a)) this.#commit(a, da);
      else this.#release(da);
      if (this.#requires.has(b)) this.#commit(b, db);
      else this.#release(db);
    });
    return y;
  }

  upsample2x(x: Tensor): Tensor {
    const [b, h, w, c] = x.shape as [number, number, number, number];
    const y = this.#new([b, 2 * h, 2 * w, c]);
    this.engine.upsample2xForward(y, x, "nhwc");
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      if (dx) this.engine.upsample2xBackward(dx, gy, "nhwc");
      this.#commit(x, dx);
    });
    return y;
  }

  transpose(x: Tensor): Tensor {
    const n = x.shape.length;
    const y = this.#new([...x.shape.slice(0, n - 2), x.shape[n - 1] ?? 0, x.shape[n - 2] ?? 0]);
    this.engine.transposeForward(y, x);
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      if (dx) this.engine.transposeBackward(dx, gy);
      this.#commit(x, dx);
    });
    return y;
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const y = x.view(0, shape);
    if (!x.arena) this.#owned.push(y);
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      if (!this.#requires.has(x)) return;
      // As in add(): gy is final here, so its memory may serve as x's gradient.
      this.#commit(x, this.#share(gy, 0, x.shape));
    });
    return y;
  }

  /** [Ba,...] and [Bb,...] -> [Ba+Bb,...] along the batch (classifier-free guidance). */
  batchConcat(a: Tensor, b: Tensor): Tensor {
    const y = this.#new([(a.shape[0] ?? 0) + (b.shape[0] ?? 0), ...a.shape.slice(1)]);
    const [ya, yb] = [y.view(0, a.shape), y.view(a.numel, b.shape)];
    this.engine.copy(ya, a);
    this.engine.copy(yb, b);
    this.#mark(y, [a, b]);
    this.#onBackward(y, (gy) => {
      // Disjoint views of the final gy serve as the halves' gradient contributions.
      this.#commit(a, this.#requires.has(a) ? this.#share(gy, 0, a.shape) : null);
      this.#commit(b, this.#requires.has(b) ? this.#share(gy, a.numel, b.shape) : null);
    });
    return y;
  }

  /** x[B,...] -> (x[:first], x[first:]) as views. */
  batchSplit(x: Tensor, first: number): [Tensor, Tensor] {
    const rows = x.shape[0] ?? 0;
    const per = x.numel / rows;
    const parts: Array<[number, number]> = [
      [0, first],
      [first, rows - first],
    ];
    const views = parts.map(([start, count]) => {
      const y = x.view(start * per, [count, ...x.shape.slice(1)]);
      if (!x.arena) this.#owned.push(y);
      this.#mark(y, [x]);
      this.#onBackward(y, (gy) => {
        if (!this.#requires.has(x)) return;
        let gx = this.#grads.get(x);
        if (!gx || !this.#writable(gx)) {
          const own = this.#gradBuffer(x.shape);
          if (gx) {
            this.engine.copy(own, gx);
            this.#release(gx);
          } else this.engine.fill(own, 0);
          gx = own;
          this.#grads.set(x, gx);
        }
        const region = gx.view(start * per, y.shape);
        this.engine.axpby(region, 1, gy, 1);
        if (!gx.arena) region.close();
      });
      return y;
    });
    return [views[0]!, views[1]!];
  }

  /** y = alpha * a + beta * b (same shapes). */
  combine(a: Tensor, alpha: number, b: Tensor, beta: number): Tensor {
    const y = this.#new(a.shape);
    this.engine.copy(y, b);
    this.engine.axpby(y, alpha, a, beta);
    this.#mark(y, [a, b]);
    this.#onBackward(y, (gy) => {
      const da = this.#slot(a);
      if (da) this.engine.axpby(da, alpha, gy, 0);
      this.#commit(a, da);
      const db = this.#slot(b);
      if (db) this.engine.axpby(db, beta, gy, 0);
      this.#commit(b, db);
    });
    return y;
  }

  timestepEmbedding(t: Tensor, dim: number, flipSinToCos: boolean, freqShift: number): Tensor {
    const y = this.#new([t.shape[0] ?? 0, dim]);
    this.engine.timestepEmbeddingForward(y, t, { flipSinToCos, freqShift });
    return y;
  }

  embedding(ids: Tensor, tokName: string, _vocab: number, dim: number, posName: string): Tensor {
    const tok = this.#param(tokName);
    const pos = this.#param(posName);
    const y = this.#new([...ids.shape, dim]);
    const idsI32 = ids as Tensor<"i32">;
    this.engine.embeddingForward(y, idsI32, tok.value, pos.value);
    this.#mark(y, [], [tok, pos]);
    this.#onBackward(y, (gy) => {
      this.engine.embeddingBackward(tok.grad, pos.grad, gy, idsI32);
    });
    return y;
  }

  // The token ops below are row gathers: gpu-core's embedding op with a table that is an
  // activation or a parameter, its backward the matching scatter-add.

  prependToken(x: Tensor, name: string): Tensor {
    const [b, n, d] = x.shape as [number, number, number];
    const token = this.#param(name);
    const zeros = this.#ids(new Int32Array(b), [b, 1]);
    const front = this.#new([b, 1, d]); // the token in every row of the batch
    this.engine.embeddingForward(front, zeros, this.#view(token.value, 0, [1, d]), null);
    const y = this.#new([b, n + 1, d]);
    this.engine.concatForward(y, front, x);
    this.#mark(y, [x], [token]);
    this.#onBackward(y, (gy) => {
      const dFront = this.#gradBuffer([b, 1, d]);
      const dx = this.#gradBuffer(x.shape);
      this.engine.concatBackward(dFront, dx, gy);
      if (token.grad) this.engine.embeddingBackward(this.#view(token.grad, 0, [1, d]), null, dFront, zeros);
      this.#release(dFront);
      if (this.#requires.has(x)) this.#commit(x, dx);
      else this.#release(dx);
    });
    return y;
  }

  addPositions(x: Tensor, name: string, _maxPositions: number): Tensor {
    const [b, t, d] = x.shape as [number, number, number];
    const pos = this.#param(name);
    const rows = this.#ids(
      Int32Array.from({ length: b * t }, (_, i) => i),
      [b, t],
    );
    const y = this.#new(x.shape);
    this.engine.embeddingForward(y, rows, this.#view(x, 0, [b * t, d]), pos.value);
    this.#mark(y, [x], [pos]);
    this.#onBackward(y, (gy) => {
      if (pos.grad) this.engine.embeddingBackward(null, pos.grad, gy, rows);
      // dx = gy exactly; as in add(), the final gy's storage may serve as x's gradient.
      if (this.#requires.has(x)) this.#commit(x, this.#share(gy));
    });
    return y;
  }

  selectTokens(x: Tensor, positions: ArrayLike<number>): Tensor {
    const [b, t, d] = x.shape as [number, number, number];
    if (positions.length !== b) throw new Error(`selectTokens: ${positions.length} positions for a batch of ${b}`);
    const rows = this.#ids(
      Array.from(positions, (p, i) => {
        if (!Number.isInteger(p) || p < 0 || p >= t) throw new Error(`selectTokens: position ${p} outside [0, ${t})`);
        return i * t + p;
      }),
      [b, 1],
    );
    const y = this.#new([b, d]);
    this.engine.embeddingForward(this.#view(y, 0, [b, 1, d]), rows, this.#view(x, 0, [b * t, d]), null);
    this.#mark(y, [x]);
    this.#onBackward(y, (gy) => {
      const dx = this.#slot(x);
      if (!dx) return;
      this.engine.fill(dx, 0);
      this.engine.embeddingBackward(this.#view(dx, 0, [b * t, d]), null, this.#view(gy, 0, [b, 1, d]), rows);
      this.#commit(x, dx);
    });
    return y;
  }

  parameter(name: string, _shape: readonly number[], _value: number): Tensor {
    const p = this.#param(name);
    if (this.#requires.has(p.value)) return p.value; // already on the tape: one backward step per graph
    this.#mark(p.value, [], [p]);
    this.#onBackward(p.value, (gy) => {
      if (p.grad) this.engine.axpby(p.grad, 1, gy, 1);
    });
    return p.value;
  }
}
