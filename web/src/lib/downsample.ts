// Per-pixel downsampling for the charts: a series of up to 86,400 samples is reduced to one bucket per pixel, each
// with the average (the line) and the minimum and maximum (the band around it), so a burst stays visible as a spike in
// the band and a low average is not drawn as a solid block.

/** One series reduced to buckets: `avg`, `min` and `max` per bucket, null where the bucket had no value. */
export interface Reduced {
  avg: (number | null)[];
  min: (number | null)[];
  max: (number | null)[];
}

export interface Downsampled {
  /** Each bucket's start, unix seconds. */
  t: number[];
  series: Reduced[];
  /** Seconds per bucket (a multiple of the samples' resolution). */
  step: number;
}

/**
 * Buckets `[from, to]` into at most `pixels` equal steps (never finer than `resolution`) and reduces every series in
 * each. A bucket without samples is null in every series, so lines break over gaps instead of inventing zeros.
 */
export function downsample(
  t: readonly number[],
  values: readonly (readonly (number | null)[])[],
  from: number,
  to: number,
  pixels: number,
  resolution: number,
): Downsampled {
  const span = Math.max(resolution, to - from);
  const res = Math.max(1, resolution);
  const step = Math.max(res, Math.ceil(span / Math.max(1, Math.floor(pixels)) / res) * res);
  const start = Math.floor(from / step) * step;
  const count = Math.max(1, Math.ceil((to - start + 1) / step));
  const buckets = Array.from({ length: count }, (_, i) => start + i * step);
  const series = values.map((ys) => {
    const sum = new Array<number>(count).fill(0);
    const n = new Array<number>(count).fill(0);
    const min = new Array<number | null>(count).fill(null);
    const max = new Array<number | null>(count).fill(null);
    ys.forEach((y, i) => {
      const at = t[i];
      if (y === null || at === undefined || at < start) return;
      const b = Math.floor((at - start) / step);
      if (b >= count) return;
      sum[b] = (sum[b] ?? 0) + y;
      n[b] = (n[b] ?? 0) + 1;
      const lo = min[b];
      const hi = max[b];
      min[b] = lo === null || lo === undefined || y < lo ? y : lo;
      max[b] = hi === null || hi === undefined || y > hi ? y : hi;
    });
    return { avg: sum.map((s, i) => ((n[i] ?? 0) > 0 ? s / (n[i] as number) : null)), min, max };
  });
  return { t: buckets, series, step };
}
