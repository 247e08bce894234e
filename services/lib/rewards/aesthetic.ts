// The LAION improved-aesthetic-predictor head (github.com/christophschuhmann/improved-aesthetic-predictor):
// Linear 768->1024, Dropout, Linear 1024->128, Dropout, Linear 128->64, Dropout, Linear 64->16,
// Linear 16->1, with no activations, over L2-normalised CLIP ViT-L/14 image embeddings. Its state
// dict names the linears by their index in that Sequential: layers.{0,2,4,6,7}.{weight,bias}.
// Dropout is the identity at inference. A few [n,768] products: it runs on the host in float64.

import { SafetensorsReader } from "../checkpoints/safetensors.ts";

/** Sequential indices of the linears and their (out, in) widths. */
export const AESTHETIC_LAYERS: readonly (readonly [number, number, number])[] = [
  [0, 1024, 768],
  [2, 128, 1024],
  [4, 64, 128],
  [6, 16, 64],
  [7, 1, 16],
];

interface Linear {
  weight: Float32Array; // [out, in]
  bias: Float32Array; // [out]
  out: number;
  in: number;
}

export class AestheticHead {
  private constructor(readonly layers: readonly Linear[]) {}

  get inputWidth(): number {
    return this.layers[0]!.in;
  }

  /** The head of a safetensors state dict; any missing, unexpected or mis-shaped tensor is named. */
  static load(file: string): AestheticHead {
    let reader: SafetensorsReader;
    try {
      reader = SafetensorsReader.open(file);
    } catch (e) {
      throw new Error(`aesthetic head ${file}: ${(e as Error).message}`);
    }
    try {
      const problems: string[] = [];
      const expected = new Set<string>();
      const layers: Linear[] = [];
      for (const [i, out, inp] of AESTHETIC_LAYERS) {
        const get = (part: "weight" | "bias", shape: number[]) => {
          const name = `layers.${i}.${part}`;
          expected.add(name);
          const info = reader.tensors.get(name);
          if (!info) problems.push(`missing ${name} [${shape.join(", ")}]`);
          else if (info.shape.join(",") !== shape.join(",")) {
            problems.push(`${name} is [${info.shape.join(", ")}], expected [${shape.join(", ")}]`);
          } else return reader.float32(name);
          return new Float32Array(0);
        };
        layers.push({ weight: get("weight", [out, inp]), bias: get("bias", [out]), out, in: inp });
      }
      for (const name of reader.tensors.keys()) if (!expected.has(name)) problems.push(`unexpected ${name}`);
      if (problems.length) throw new Error(`aesthetic head ${file} is not the LAION head: ${problems.join("; ")}`);
      return new AestheticHead(layers);
    } finally {
      reader.close();
    }
  }

  /** Scores (n,) of image embeddings [n, 768] as given (the reward passes them L2-normalised). */
  forward(embeddings: ArrayLike<number>): Float64Array {
    const width = this.inputWidth;
    if (embeddings.length % width !== 0)
      throw new Error(`aesthetic head: ${embeddings.length} values is not n x ${width}`);
    let x: ArrayLike<number> = embeddings;
    const n = embeddings.length / width;
    for (const l of this.layers) {
      const y = new Float64Array(n * l.out);
      for (let r = 0; r < n; r++)
        for (let o = 0; o < l.out; o++) {
          let s = l.bias[o]!;
          for (let k = 0; k < l.in; k++) s += l.weight[o * l.in + k]! * x[r * l.in + k]!;
          y[r * l.out + o] = s;
        }
      x = y;
    }
    return Float64Array.from(x);
  }
}
