// Mean and population standard deviation (numpy's np.std, ddof = 0), two passes: the one
// implementation behind advantages (stat tracker, batch normalisation) and epoch reports.

/** Mean and population std of xs; NaN for both when xs is empty. */
export function meanStd(xs: ArrayLike<number>): { mean: number; std: number } {
  const n = xs.length;
  if (n === 0) return { mean: Number.NaN, std: Number.NaN };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += xs[i]!;
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += (xs[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(sq / n) };
}

/** Mean of xs; NaN when empty. */
export function mean(xs: ArrayLike<number>): number {
  return meanStd(xs).mean;
}
