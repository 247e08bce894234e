// Per-op-kind profile of engine calls: wraps an Engine's op methods (forward, backward and the
// data-movement ops) and accumulates wall time, calls, bytes touched (every tensor argument's size,
// read or written once) and matrix-product FLOPs per op. The CPU backend is synchronous, so a call's
// wall time is its op's time; on CUDA the profiler synchronises after each call.
import { type Engine, Tensor } from "../gpu-core/index.ts";

export interface OpProfile {
  op: string;
  calls: number;
  ms: number;
  bytes: number;
  flops: number;
}

const PROFILED = /(Forward|Backward)$|^(axpby|copy|fill|randn|adamwStep|clipGradNorm)$/;

/** Matrix-product FLOPs of one call from its tensor arguments (0 for memory-bound ops). */
function callFlops(op: string, args: unknown[]): number {
  const t = (i: number) => args[i] as Tensor;
  switch (op) {
    case "linearForward": // y [.., N] = x [.., K] w[N, K]^T
      return 2 * t(1).numel * (t(2).shape[0] ?? 0);
    case "linearBackward": // dx and dw: twice the forward (x at 4, w at 5)
      return 4 * t(4).numel * (t(5).shape[0] ?? 0);
    case "gegluFeedForward": // x [N, I] w1 [2F, I]^T, then [N, F] w2 [O, F]^T (x at 1, w1 at 2, w2 at 4)
      return 2 * t(1).numel * (t(2).shape[0] ?? 0) + (2 * t(1).numel * t(4).numel) / (t(2).shape[1] ?? 1);
    case "conv2dForward": // y numel x Cin k k
      return (2 * t(0).numel * t(2).numel) / (t(2).shape[0] ?? 1);
    case "conv2dBackward": // gy at 3, w at 5
      return (4 * t(3).numel * t(5).numel) / (t(5).shape[0] ?? 1);
    case "attentionForward": // QK^T and PV: 4 B Tq Tk D (q at 2, k at 3)
      return 4 * t(2).numel * (t(3).shape[1] ?? 0);
    case "attentionBackward": // dP, dS->dQ, dK, dV: twice the forward (q at 4, k at 5)
      return 8 * t(4).numel * (t(5).shape[1] ?? 0);
    default:
      return 0;
  }
}

/** Starts profiling `engine`; the returned function stops it and gives the rows, slowest first. */
export function profileEngine(engine: Engine): () => OpProfile[] {
  const rows = new Map<string, OpProfile>();
  const proto = Object.getPrototypeOf(engine) as object;
  const patched: string[] = [];
  for (const name of Object.getOwnPropertyNames(proto)) {
    const original = Object.getOwnPropertyDescriptor(proto, name)?.value;
    if (!PROFILED.test(name) || typeof original !== "function") continue;
    patched.push(name);
    Object.defineProperty(engine, name, {
      configurable: true,
      value: (...args: unknown[]) => {
        const t0 = performance.now();
        const result = (original as (...a: unknown[]) => unknown).apply(engine, args);
        engine.synchronize();
        const ms = performance.now() - t0;
        const row = rows.get(name) ?? { op: name, calls: 0, ms: 0, bytes: 0, flops: 0 };
        row.calls += 1;
        row.ms += ms;
        for (const a of args) if (a instanceof Tensor) row.bytes += a.numel * 4;
        row.flops += callFlops(name, args);
        rows.set(name, row);
        return result;
      },
    });
  }
  return () => {
    for (const name of patched) delete (engine as unknown as Record<string, unknown>)[name];
    return [...rows.values()].sort((a, b) => b.ms - a.ms);
  };
}

/** The rows of a profile taken over n repetitions of the same work, as one repetition's share. */
export function perRepetition(rows: readonly OpProfile[], n: number): OpProfile[] {
  return rows.map((r) => ({ ...r, calls: r.calls / n, ms: r.ms / n, bytes: r.bytes / n, flops: r.flops / n }));
}

/** A markdown table of a profile: ms, share, calls, GB/s, GFLOP/s per op kind. */
export function profileTable(title: string, rows: readonly OpProfile[]): string {
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const lines = [
    `${title}: ${total.toFixed(1)} ms in engine calls`,
    "| op | calls | ms | share | MB touched | GB/s | GFLOP/s |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const s = r.ms / 1000;
    lines.push(
      `| ${r.op} | ${r.calls} | ${r.ms.toFixed(1)} | ${((100 * r.ms) / total).toFixed(1)}% | ${(r.bytes / 2 ** 20).toFixed(0)} | ${(r.bytes / s / 1e9).toFixed(1)} | ${r.flops ? (r.flops / s / 1e9).toFixed(1) : ""} |`,
    );
  }
  return lines.join("\n");
}
