// The charts' arithmetic without UI: value formatting with units (IOPS, B/s in binary units, ms), "nice" value axes,
// local-time labels with dates and the time zone, and the text alternative's summary. Drawing is uPlot's.

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

const DAY = new Intl.DateTimeFormat('en-GB', { weekday: 'short', day: 'numeric', month: 'short' });

/** The local date of a time: `Thu 3 Dec`. */
export function formatDay(unixSeconds: number): string {
  return DAY.format(new Date(unixSeconds * 1000)).replace(',', '');
}

/** The local zone's offset as `UTC+01:00`. */
export function offsetLabel(unixSeconds: number): string {
  const off = localOffset(unixSeconds) / 60;
  const sign = off < 0 ? '-' : '+';
  const abs = Math.abs(off);
  return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** The browser's time zone, named and as an offset: `Europe/Berlin, UTC+01:00`. */
export function zoneLabel(unixSeconds: number): string {
  let name = '';
  try {
    name = Intl.DateTimeFormat().resolvedOptions().timeZone ?? '';
  } catch {
    name = '';
  }
  const offset = offsetLabel(unixSeconds);
  return name && name !== 'UTC' ? `${name}, ${offset}` : offset;
}

/**
 * Labels for time-axis ticks in local time: clock times (with seconds when ticks are under a minute apart), and the
 * date under the first tick and under every tick that starts a new day.
 */
export function timeLabels(ticks: readonly number[]): string[] {
  const step = ticks.length > 1 ? (ticks[1] ?? 0) - (ticks[0] ?? 0) : 60;
  let lastDay = '';
  return ticks.map((t) => {
    const day = formatDay(t);
    const clock = formatClock(t, step < 60);
    if (day === lastDay) return clock;
    lastDay = day;
    return `${clock}\n${day}`;
  });
}

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
      : `${s.label}: peak ${formatValue(s.peak.value, kind)} at ${formatClock(s.peak.t, true)} ${formatDay(s.peak.t)}, latest ${latestText(s, kind)}`,
  );
  return `${title} over ${phrase}: ${parts.join('; ')}.`;
}
