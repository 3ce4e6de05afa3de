// The line charts' arithmetic without UI: value formatting with units (IOPS, B/s in binary units, ms), "nice" value
// axes, time axes aligned to the local clock, and the SVG path of a series that breaks where samples are missing.

export type ValueKind = 'iops' | 'bps' | 'ms';

/** One sample of a series: unix seconds and a value, or null where there is nothing to show (e.g. latency of 0 ops). */
export type ChartPoint = readonly [t: number, value: number | null];

const RATE_UNITS = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s'] as const;
const GROUPED = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A number with at most 3 significant digits below 1000 (`9.58`, `0.5`, `0.00412`) and grouped above (`12,346`). */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return '–';
  if (value === 0) return '0';
  const abs = Math.abs(value);
  if (abs >= 1000) return GROUPED.format(value);
  // toPrecision then Number drops trailing zeros and never uses exponent notation in this range.
  return String(Number(value.toPrecision(3)));
}

/** The binary power (0 = B/s, 1 = KiB/s, ...) that keeps a byte rate at least 1. */
export function rateUnitIndex(bytesPerSecond: number): number {
  let unit = 0;
  while (unit < RATE_UNITS.length - 1 && Math.abs(bytesPerSecond) >= 1024 ** (unit + 1)) unit += 1;
  return unit;
}

/** A figure with its unit: `12 IOPS`, `1.5 MiB/s`, `9.58 ms`. */
export function formatValue(value: number, kind: ValueKind): string {
  if (kind === 'bps') {
    const unit = rateUnitIndex(value);
    return `${formatNumber(value / 1024 ** unit)} ${RATE_UNITS[unit]}`;
  }
  return `${formatNumber(value)} ${kind === 'iops' ? 'IOPS' : 'ms'}`;
}

/** The step of 1, 2, 2.5 or 5 times a power of ten closest above `rough`. */
export function niceStep(rough: number): number {
  if (!(rough > 0) || !Number.isFinite(rough)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const norm = rough / magnitude;
  const factor = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return factor * magnitude;
}

/** Ticks from 0 to the first multiple of a nice step at or above `max`, about `count` intervals. */
export function niceTicks(max: number, count = 4): number[] {
  const top = max > 0 && Number.isFinite(max) ? max : 1;
  const step = niceStep(top / count);
  const intervals = Math.max(1, Math.ceil(top / step - 1e-9));
  // Multiply rather than add so that 0.1-steps do not accumulate rounding errors.
  return Array.from({ length: intervals + 1 }, (_, i) => Number((i * step).toPrecision(12)));
}

export interface ValueAxis {
  /** The value at the top of the plot. */
  max: number;
  /** Tick values, in the series' own unit (IOPS, bytes per second, ms). */
  ticks: number[];
  /** Tick labels, without the unit. */
  labels: string[];
  /** The unit the labels are in: `IOPS`, `MiB/s`, `ms`. */
  unit: string;
}

/** A value axis from 0 covering `max`; byte rates get ticks in the one binary unit that suits the largest value. */
export function valueAxis(max: number, kind: ValueKind): ValueAxis {
  if (kind === 'bps') {
    const unit = rateUnitIndex(max);
    const scale = 1024 ** unit;
    const scaled = niceTicks(max / scale);
    return {
      max: (scaled[scaled.length - 1] ?? 1) * scale,
      ticks: scaled.map((v) => v * scale),
      labels: scaled.map(formatNumber),
      unit: RATE_UNITS[unit] ?? 'B/s',
    };
  }
  const ticks = niceTicks(max);
  return {
    max: ticks[ticks.length - 1] ?? 1,
    ticks,
    labels: ticks.map(formatNumber),
    unit: kind === 'iops' ? 'IOPS' : 'ms',
  };
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

/**
 * Time ticks (unix seconds) between `from` and `to`, at most `maxTicks` of them, on round local-clock times.
 * `offsetSeconds` is the local zone's offset from UTC (east positive), so that hourly ticks fall on local hours.
 */
export function timeTicks(from: number, to: number, maxTicks: number, offsetSeconds = localOffset(to)): number[] {
  const span = Math.max(1, to - from);
  const step = TIME_STEPS.find((s) => span / s <= Math.max(1, maxTicks)) ?? 86400;
  const first = Math.ceil((from + offsetSeconds) / step) * step - offsetSeconds;
  const ticks: number[] = [];
  for (let t = first; t <= to; t += step) ticks.push(t);
  return ticks;
}

/** The step between two time ticks, or the span when there is at most one. */
export function tickStep(ticks: readonly number[], span: number): number {
  return ticks.length > 1 ? (ticks[1] ?? 0) - (ticks[0] ?? 0) : span;
}

export function localOffset(unixSeconds: number): number {
  return -new Date(unixSeconds * 1000).getTimezoneOffset() * 60;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** A clock label in local time: `16:05`, or `16:05:30` when ticks are less than a minute apart. */
export function formatClock(unixSeconds: number, withSeconds: boolean): string {
  const d = new Date(unixSeconds * 1000);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withSeconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export interface Scale {
  x: (t: number) => number;
  y: (value: number) => number;
}

/** A linear map from [from, to] × [0, max] onto a plot box (y grows downwards in SVG). */
export function linearScale(
  from: number,
  to: number,
  max: number,
  box: { left: number; top: number; width: number; height: number },
): Scale {
  const span = to - from || 1;
  const top = max || 1;
  return {
    x: (t) => box.left + ((t - from) / span) * box.width,
    y: (v) => box.top + box.height - (Math.min(Math.max(v, 0), top) / top) * box.height,
  };
}

export interface Traced {
  /** The `d` attribute of the line: one `M` per run of consecutive samples. */
  path: string;
  /** Samples with no neighbour in their run, drawn as dots so that a single busy second stays visible. */
  dots: { x: number; y: number }[];
}

/**
 * Traces a series: consecutive samples are joined unless their times are more than `maxGap` seconds apart or one of
 * them has no value; samples outside [from, to] are dropped.
 */
export function tracePath(points: readonly ChartPoint[], scale: Scale, maxGap: number, from = -Infinity): Traced {
  const runs: { x: number; y: number }[][] = [];
  let run: { x: number; y: number }[] = [];
  let lastT = -Infinity;
  for (const [t, v] of points) {
    if (t < from) continue;
    if (v === null || t - lastT > maxGap) {
      if (run.length > 0) runs.push(run);
      run = [];
    }
    if (v !== null) {
      run.push({ x: round(scale.x(t)), y: round(scale.y(v)) });
      lastT = t;
    } else {
      lastT = -Infinity;
    }
  }
  if (run.length > 0) runs.push(run);
  const path = runs
    .filter((r) => r.length > 1)
    .map((r) => r.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x} ${p.y}`).join(''))
    .join('');
  const dots = runs.filter((r) => r.length === 1).map((r) => r[0] as { x: number; y: number });
  return { path, dots };
}

const round = (n: number) => Math.round(n * 10) / 10;

/** What a chart's text alternative needs of a series. */
export interface SeriesFigures {
  label: string;
  latest: number | null;
  peak: { value: number; t: number } | null;
}

/** The latest figure, or what its absence means. */
export function latestText(s: SeriesFigures, kind: ValueKind): string {
  return s.latest === null ? 'no operations' : formatValue(s.latest, kind);
}

/** The chart's one-sentence summary for screen readers: each series' peak and latest figure, or that it was idle. */
export function summarize(title: string, phrase: string, series: readonly SeriesFigures[], kind: ValueKind): string {
  if (series.every((s) => s.peak === null)) return `${title} over ${phrase}: no I/O in this window.`;
  const parts = series.map((s) =>
    s.peak === null
      ? `${s.label}: none`
      : `${s.label}: peak ${formatValue(s.peak.value, kind)} at ${formatClock(s.peak.t, true)}, latest ${latestText(s, kind)}`,
  );
  return `${title} over ${phrase}: ${parts.join('; ')}.`;
}
