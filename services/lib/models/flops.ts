// Counts the multiply-add FLOPs of a model definition's matrix products (conv, linear,
// attention) from shapes alone: the numerator of "achieved GFLOP/s" in the benchmarks.
// Backward of each product costs twice its forward (input and weight gradients).

import type { Activation } from "../../../gpu-core/index.ts";
import { type Layers, type Shaped, ShapeRecorder } from "./layers.ts";

export class FlopCounter implements Layers<Shaped> {
  /** Forward FLOPs of the matrix products seen so far. */
  forward = 0;
  readonly #shapes = new ShapeRecorder();

  input(shape: readonly number[]): Shaped {
    return this.#shapes.input(shape);
  }

  linear(x: Shaped, name: string, out: number, bias = true): Shaped {
    const rows = x.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    this.forward += 2 * rows * (x.shape[x.shape.length - 1] ?? 0) * out;
    return this.#shapes.linear(x, name, out, bias);
  }

  conv2d(x: Shaped, name: string, out: number, k: number, stride: number, pad: number, bias = true): Shaped {
    const y = this.#shapes.conv2d(x, name, out, k, stride, pad, bias);
    const [b, ho, wo] = y.shape as [number, number, number, number];
    this.forward += 2 * b * out * ho * wo * (x.shape[3] ?? 0) * k * k;
    return y;
  }

  attention(q: Shaped, k: Shaped, v: Shaped, heads: number, causal: boolean): Shaped {
    const [b, tq, c] = q.shape as [number, number, number];
    const tk = k.shape[1] ?? 0;
    this.forward += 2 * 2 * b * tq * tk * c; // QK^T and PV
    return this.#shapes.attention(q, k, v, heads, causal);
  }

  groupNorm(x: Shaped, name: string, groups: number, eps: number, act?: "silu"): Shaped {
    return this.#shapes.groupNorm(x, name, groups, eps, act);
  }
  layerNorm(x: Shaped, name: string, eps: number): Shaped {
    return this.#shapes.layerNorm(x, name, eps);
  }
  act(kind: Activation, x: Shaped): Shaped {
    return this.#shapes.act(kind, x);
  }
  geglu(x: Shaped): Shaped {
    return this.#shapes.geglu(x);
  }
  feedForward(x: Shaped, name: string, inner: number): Shaped {
    const dim = x.shape[x.shape.length - 1] ?? 0;
    return this.linear(this.geglu(this.linear(x, `${name}.net.0.proj`, 2 * inner)), `${name}.net.2`, dim);
  }
  add(a: Shaped, b: Shaped): Shaped {
    return this.#shapes.add(a, b);
  }
  concat(a: Shaped, b: Shaped): Shaped {
    return this.#shapes.concat(a, b);
  }
  upsample2x(x: Shaped): Shaped {
    return this.#shapes.upsample2x(x);
  }
  transpose(x: Shaped): Shaped {
    return this.#shapes.transpose(x);
  }
  reshape(x: Shaped, shape: readonly number[]): Shaped {
    return this.#shapes.reshape(x, shape);
  }
  timestepEmbedding(t: Shaped, dim: number): Shaped {
    return this.#shapes.timestepEmbedding(t, dim);
  }
  embedding(ids: Shaped, tokName: string, vocab: number, dim: number, posName: string, maxPositions: number): Shaped {
    return this.#shapes.embedding(ids, tokName, vocab, dim, posName, maxPositions);
  }
  prependToken(x: Shaped, name: string): Shaped {
    return this.#shapes.prependToken(x, name);
  }
  addPositions(x: Shaped, name: string, maxPositions: number): Shaped {
    return this.#shapes.addPositions(x, name, maxPositions);
  }
  selectTokens(x: Shaped, positions: ArrayLike<number>): Shaped {
    return this.#shapes.selectTokens(x, positions);
  }
  parameter(name: string, shape: readonly number[], value: number): Shaped {
    return this.#shapes.parameter(name, shape, value);
  }
}
