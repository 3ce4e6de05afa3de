// The performance tabs' rules without UI: the time ranges offered and how often each refreshes, the window the top
// tables rank over, the visible time span, and the read/write series (with their latest and peak figures) that the
// charts draw from the API's points.

import type { PerfPoint } from '../api/types';
import type { ChartPoint, ValueKind } from './chart';

export interface PerfRange {
  id: string;
  /** Seconds back from now, as the API's `range`. */
  seconds: number;
  /** What the selector shows. */
  label: string;
  /** What sentences say: "the last 5 minutes". */
  phrase: string;
}

export const PERF_RANGES: readonly PerfRange[] = [
  { id: '5m', seconds: 300, label: '5 min', phrase: 'the last 5 minutes' },
  { id: '15m', seconds: 900, label: '15 min', phrase: 'the last 15 minutes' },
  { id: '1h', seconds: 3600, label: '1 h', phrase: 'the last hour' },
  { id: '6h', seconds: 21600, label: '6 h', phrase: 'the last 6 hours' },
  { id: '24h', seconds: 86400, label: '24 h', phrase: 'the last 24 hours' },
];

export const DEFAULT_RANGE: PerfRange = PERF_RANGES[0] as PerfRange;

/** The range with this id, or the default one. */
export function rangeById(id: string | null | undefined): PerfRange {
  return PERF_RANGES.find((r) => r.id === id) ?? DEFAULT_RANGE;
}

/** The seconds the server keeps at 1 s resolution; longer ranges come at 60 s. */
export const FINE_SECONDS = 3600;

/** The resolution the server answers a range with. */
export function resolutionOf(range: PerfRange): number {
  return range.seconds <= FINE_SECONDS ? 1 : 60;
}

/** How often a visible chart reloads: every few seconds at 1 s resolution, less often for the minute-long points. */
export function refreshMs(range: PerfRange): number {
  return resolutionOf(range) === 1 ? 3000 : 15000;
}

/** The window the top tables average over: the chosen range, at most the hour the server ranks. */
export function topWindow(range: PerfRange): { seconds: number; phrase: string } {
  return range.seconds <= FINE_SECONDS
    ? { seconds: range.seconds, phrase: range.phrase }
    : { seconds: 3600, phrase: 'the last hour' };
}

/**
 * The time span a chart shows: `seconds` back from now, where now is the browser's clock or the newest sample when
 * that is later (a server clock ahead of the browser's must not push samples off the right edge).
 */
export function visibleSpan(
  points: readonly PerfPoint[],
  seconds: number,
  nowSeconds: number,
): { from: number; to: number } {
  const newest = points.length > 0 ? (points[points.length - 1] as PerfPoint).t : 0;
  const to = Math.max(Math.floor(nowSeconds), newest);
  return { from: to - seconds, to };
}

/** True when any sample in the window saw an operation or a byte. */
export function hasActivity(points: readonly PerfPoint[]): boolean {
  return points.some(
    (p) => p.read_iops > 0 || p.write_iops > 0 || p.read_bps > 0 || p.write_bps > 0 || backgroundBps(p) > 0,
  );
}

/** Bytes per second that background tasks (flatten, copy, deep copy) read and wrote. */
export function backgroundBps(p: PerfPoint): number {
  return (p.background_read_bps ?? 0) + (p.background_write_bps ?? 0);
}

export type Metric = 'iops' | 'bps' | 'latency';

export const METRIC_KIND: Record<Metric, ValueKind> = { iops: 'iops', bps: 'bps', latency: 'ms' };

/** One direction of one metric, ready to chart. */
export interface PerfSeries {
  label: 'Read' | 'Write' | 'Background';
  points: ChartPoint[];
  /** The newest sample's value (null: no operation then, for latency). */
  latest: number | null;
  /** The largest value and when, or null when there is none. */
  peak: { value: number; t: number } | null;
}

function figures(label: PerfSeries['label'], values: ChartPoint[]): PerfSeries {
  let peak: PerfSeries['peak'] = null;
  for (const [t, v] of values) if (v !== null && v > 0 && (peak === null || v > peak.value)) peak = { value: v, t };
  const last = values[values.length - 1];
  return { label, points: values, latest: last ? last[1] : null, peak };
}

/**
 * The read and write series of a metric, and for IOPS and throughput the background series (flatten, copy and deep
 * copy moving data inside the store). Latency is only defined where operations happened, so samples without
 * operations in that direction become gaps instead of a made-up 0 ms.
 */
export function seriesOf(points: readonly PerfPoint[], metric: Metric): PerfSeries[] {
  const series = (['read', 'write'] as const).map((dir) => {
    const values: ChartPoint[] = points.map((p) => {
      if (metric === 'latency') return [p.t, p[`${dir}_iops`] > 0 ? p[`${dir}_latency_ms`] : null];
      return [p.t, p[`${dir}_${metric}`]];
    });
    return figures(dir === 'read' ? 'Read' : 'Write', values);
  });
  if (metric === 'latency') return series;
  const background: ChartPoint[] = points.map((p) => [
    p.t,
    metric === 'iops' ? (p.background_iops ?? 0) : backgroundBps(p),
  ]);
  return [...series, figures('Background', background)];
}
