// The layer vocabulary models are written in. A model is one function over `Layers<T>`, run
// twice in two meanings: over ShapeRecorder it lists the parameters (names from diffusers /
// transformers, shapes from the config), over Graph (graph.ts) it computes on gpu-core and
// records the backward pass. One definition, so names, shapes and order cannot drift apart.
//
// Images inside a model are channels-last, [B,H,W,C]: the layout oneDNN's (and cuDNN's) fastest
// convolutions read and write without a reorder, and in which an image's pixels already are the
// [B,HW,C] tokens of its attention layers. Parameters keep PyTorch's shapes ([O,C,K,K] kernels),
// and a model's inputs and outputs keep PyTorch's NCHW: toChannelsLast / toChannelsFirst at the
// edges.

import type { Activation } from "../../../gpu-core/index.ts";

export interface Shaped {
  readonly shape: readonly number[];
}

export interface ParameterShape {
  name: string;
  shape: number[];
  /** How a fresh model initialises it (PyTorch defaults). */
  init: "fan_in" | "ones" | "zeros" | "normal" | "constant";
  fanIn: number;
  std?: number;
  /** The value of a "constant" initialisation. */
  value?: number;
}

export interface Layers<T extends Shaped> {
  /** y[..., out] = x[..., in] W^T + b, parameters `${name}.weight` [out,in] and `${name}.bias`. */
  linear(x: T, name: string, out: number, bias?: boolean): T;
  /** Conv of x[B,H,W,in] to [B,Ho,Wo,out], square kernel k; `${name}.weight` [out,in,k,k],
   * `${name}.bias` [out] unless bias is false. */
  conv2d(x: T, name: string, out: number, k: number, stride: number, pad: number, bias?: boolean): T;
  /** Affine group norm over x[B,H,W,C] (`${name}.weight`, `${name}.bias` [C]); with act "silu",
   * silu(groupNorm(x)) as one op (a resnet's norm and activation). */
  groupNorm(x: T, name: string, groups: number, eps: number, act?: "silu"): T;
  /** Affine layer norm over the last dim. */
  layerNorm(x: T, name: string, eps: number): T;
  act(kind: Activation, x: T): T;
  geglu(x: T): T;
  /** diffusers' GEGLU FeedForward over x[..., D]: `${name}.net.0.proj` (D -> 2 inner), GEGLU,
   * `${name}.net.2` (inner -> D). Graph runs it as one fused op (saving the intermediates only
   * when a gradient flows through it), or as the three layers when LoRA adapts either product. */
  feedForward(x: T, name: string, inner: number): T;
  /** q[B,Tq,C], k,v[B,Tk,C] -> [B,Tq,C]. */
  attention(q: T, k: T, v: T, heads: number, causal: boolean): T;
  /** a + b; b the same shape, a leading prefix of a's dims, or a's dims with a run of 1s (a
   * per-channel bias [B,1,1,C] onto [B,H,W,C]), broadcast. */
  add(a: T, b: T): T;
  /** Channel concat of [B,H,W,Ca] and [B,H,W,Cb]. */
  concat(a: T, b: T): T;
  /** [B,H,W,C] -> [B,2H,2W,C], nearest neighbour. */
  upsample2x(x: T): T;
  /** [B,M,N] -> [B,N,M]. */
  transpose(x: T): T;
  reshape(x: T, shape: readonly number[]): T;
  /** t[B] -> [B,dim] sinusoidal (no parameters, no gradient). */
  timestepEmbedding(t: T, dim: number, flipSinToCos: boolean, freqShift: number): T;
  /** ids[B,L] (i32) -> tok[ids] + pos[0..L) with `${tokName}` [vocab,dim], `${posName}` [maxPos,dim]. */
  embedding(ids: T, tokName: string, vocab: number, dim: number, posName: string, maxPositions: number): T;
  /** x[B,N,D] -> [B,N+1,D] with the learned token `${name}` [D] in front (ViT's class token). */
  prependToken(x: T, name: string): T;
  /** x[B,T,D] + `${name}`[0..T) with `${name}` [maxPositions,D] learned positions. */
  addPositions(x: T, name: string, maxPositions: number): T;
  /** x[B,T,D] -> [B,D]: row b is x[b, positions[b]] (a class token, a text's eos). */
  selectTokens(x: T, positions: ArrayLike<number>): T;
  /** The parameter `name` itself (shape [] is a scalar, a [1] tensor), initialised to `value`. */
  parameter(name: string, shape: readonly number[], value: number): T;
}

/** [B,C,H,W] (PyTorch's layout) -> [B,H,W,C]. */
export function toChannelsLast<T extends Shaped>(L: Layers<T>, x: T): T {
  const [b, c, h, w] = x.shape as [number, number, number, number];
  return L.reshape(L.transpose(L.reshape(x, [b, c, h * w])), [b, h, w, c]);
}

/** [B,H,W,C] -> [B,C,H,W]. */
export function toChannelsFirst<T extends Shaped>(L: Layers<T>, x: T): T {
  const [b, h, w, c] = x.shape as [number, number, number, number];
  return L.reshape(L.transpose(L.reshape(x, [b, h * w, c])), [b, c, h, w]);
}

class Shape implements Shaped {
  constructor(readonly shape: readonly number[]) {}
}

function last(shape: readonly number[]): number {
  return shape[shape.length - 1] ?? 0;
}

function fail(message: string): never {
  throw new Error(`model definition: ${message}`);
}

/** Runs a model definition on shapes only and collects its parameters in order of first use. */
export class ShapeRecorder implements Layers<Shaped> {
  readonly parameters: ParameterShape[] = [];
  readonly #seen = new Map<string, ParameterShape>();

  input(shape: readonly number[]): Shaped {
    return new Shape(shape);
  }

  #param(p: ParameterShape): void {
    const prior = this.#seen.get(p.name);
    if (prior) {
      if (prior.shape.join() !== p.shape.join()) {
        fail(`parameter ${p.name} used with shapes [${prior.shape}] and [${p.shape}]`);
      }
      return;
    }
    this.#seen.set(p.name, p);
    this.parameters.push(p);
  }

  linear(x: Shaped, name: string, out: number, bias = true): Shaped {
    const inF = last(x.shape);
    this.#param({ name: `${name}.weight`, shape: [out, inF], init: "fan_in", fanIn: inF });
    if (bias) this.#param({ name: `${name}.bias`, shape: [out], init: "fan_in", fanIn: inF });
    return new Shape([...x.shape.slice(0, -1), out]);
  }

  conv2d(x: Shaped, name: string, out: number, k: number, stride: number, pad: number, bias = true): Shaped {
    const [b, h, w, c] = x.shape as [number, number, number, number];
    const fanIn = c * k * k;
    this.#param({ name: `${name}.weight`, shape: [out, c, k, k], init: "fan_in", fanIn });
    if (bias) this.#param({ name: `${name}.bias`, shape: [out], init: "fan_in", fanIn });
    return new Shape([b, Math.floor((h + 2 * pad - k) / stride) + 1, Math.floor((w + 2 * pad - k) / stride) + 1, out]);
  }

  groupNorm(x: Shaped, name: string, groups: number, _eps: number, _act?: "silu"): Shaped {
    const c = last(x.shape);
    if (c % groups !== 0) fail(`${name}: ${groups} groups do not divide ${c} channels`);
    this.#param({ name: `${name}.weight`, shape: [c], init: "ones", fanIn: 1 });
    this.#param({ name: `${name}.bias`, shape: [c], init: "zeros", fanIn: 1 });
    return x;
  }

  layerNorm(x: Shaped, name: string, _eps: number): Shaped {
    const d = last(x.shape);
    this.#param({ name: `${name}.weight`, shape: [d], init: "ones", fanIn: 1 });
    this.#param({ name: `${name}.bias`, shape: [d], init: "zeros", fanIn: 1 });
    return x;
  }

  act(_kind: Activation, x: Shaped): Shaped {
    return x;
  }

  geglu(x: Shaped): Shaped {
    return new Shape([...x.shape.slice(0, -1), last(x.shape) / 2]);
  }

  feedForward(x: Shaped, name: string, inner: number): Shaped {
    return this.linear(this.geglu(this.linear(x, `${name}.net.0.proj`, 2 * inner)), `${name}.net.2`, last(x.shape));
  }

  attention(q: Shaped, k: Shaped, _v: Shaped, heads: number, _causal: boolean): Shaped {
    if (last(q.shape) % heads !== 0) fail(`${heads} heads do not divide width ${last(q.shape)}`);
    if (last(k.shape) !== last(q.shape)) fail("q and k widths differ");
    return q;
  }

  add(a: Shaped, b: Shaped): Shaped {
    const prefix = b.shape.every((d, i) => a.shape[i] === d);
    const ones = b.shape.length === a.shape.length && b.shape.every((d, i) => a.shape[i] === d || d === 1);
    if (!prefix && !ones) fail(`cannot add [${b.shape}] to [${a.shape}]`);
    return a;
  }

  concat(a: Shaped, b: Shaped): Shaped {
    if (a.shape.slice(0, -1).join() !== b.shape.slice(0, -1).join()) fail(`cannot concat [${b.shape}] to [${a.shape}]`);
    return new Shape([...a.shape.slice(0, -1), last(a.shape) + last(b.shape)]);
  }

  upsample2x(x: Shaped): Shaped {
    const [b, h, w, c] = x.shape as [number, number, number, number];
    return new Shape([b, 2 * h, 2 * w, c]);
  }

  transpose(x: Shaped): Shaped {
    const n = x.shape.length;
    return new Shape([...x.shape.slice(0, n - 2), x.shape[n - 1] ?? 0, x.shape[n - 2] ?? 0]);
  }

  reshape(_x: Shaped, shape: readonly number[]): Shaped {
    return new Shape(shape);
  }

  timestepEmbedding(t: Shaped, dim: number): Shaped {
    return new Shape([t.shape[0] ?? 0, dim]);
  }

  embedding(ids: Shaped, tokName: string, vocab: number, dim: number, posName: string, maxPositions: number): Shaped {
    this.#param({ name: tokName, shape: [vocab, dim], init: "normal", fanIn: 1, std: 0.02 });
    this.#param({ name: posName, shape: [maxPositions, dim], init: "normal", fanIn: 1, std: 0.01 });
    return new Shape([...ids.shape, dim]);
  }

  prependToken(x: Shaped, name: string): Shaped {
    const [b, n, d] = x.shape as [number, number, number];
    // transformers' CLIP initialises the class embedding N(0, D^-1/2).
    this.#param({ name, shape: [d], init: "normal", fanIn: 1, std: d ** -0.5 });
    return new Shape([b, n + 1, d]);
  }

  addPositions(x: Shaped, name: string, maxPositions: number): Shaped {
    const [, t, d] = x.shape as [number, number, number];
    if (t > maxPositions) fail(`${name}: ${t} tokens exceed ${maxPositions} positions`);
    this.#param({ name, shape: [maxPositions, d], init: "normal", fanIn: 1, std: 0.02 });
    return x;
  }

  selectTokens(x: Shaped, positions: ArrayLike<number>): Shaped {
    const [b, , d] = x.shape as [number, number, number];
    if (positions.length !== b) fail(`selectTokens: ${positions.length} positions for a batch of ${b}`);
    return new Shape([b, d]);
  }

  parameter(name: string, shape: readonly number[], value: number): Shaped {
    this.#param({ name, shape: [...shape], init: "constant", fanIn: 1, value });
    return new Shape(shape.length ? shape : [1]);
  }
}
