// Unit tests of the performance tabs' rules: the ranges and their refresh, the top tables' window, the visible span,
// and the read/write series with their latest and peak figures (latency only where operations happened).
import { describe, expect, it } from 'vitest';
import type { PerfPoint } from '../api/types';
import {
  DEFAULT_RANGE,
  hasActivity,
  PERF_RANGES,
  rangeById,
  refreshMs,
  resolutionOf,
  seriesOf,
  topWindow,
  visibleSpan,
} from './perf';

const idle = (t: number): PerfPoint => ({
  t,
  read_iops: 0,
  write_iops: 0,
  read_bps: 0,
  write_bps: 0,
  read_latency_ms: 0,
  write_latency_ms: 0,
});
const write = (t: number): PerfPoint => ({ ...idle(t), write_iops: 1, write_bps: 4 * 2 ** 20, write_latency_ms: 9.5 });

describe('ranges', () => {
  it('offers 5 min to 24 h, all within what the API accepts (1..86400 s)', () => {
    expect(PERF_RANGES.map((r) => r.label)).toEqual(['5 min', '15 min', '1 h', '6 h', '24 h']);
    expect(PERF_RANGES.every((r) => r.seconds >= 1 && r.seconds <= 86400)).toBe(true);
    expect(DEFAULT_RANGE.seconds).toBe(300);
  });
  it('finds a range by id and falls back to the default', () => {
    expect(rangeById('6h').seconds).toBe(21600);
    expect(rangeById('nonsense')).toBe(DEFAULT_RANGE);
    expect(rangeById(null)).toBe(DEFAULT_RANGE);
  });
  it('matches the server resolution: 1 s up to an hour, 60 s beyond', () => {
    expect(PERF_RANGES.map(resolutionOf)).toEqual([1, 1, 1, 60, 60]);
  });
  it('refreshes every few seconds at 1 s resolution and less often at 60 s', () => {
    expect(refreshMs(rangeById('5m'))).toBe(3000);
    expect(refreshMs(rangeById('1h'))).toBe(3000);
    expect(refreshMs(rangeById('24h'))).toBe(15000);
  });
  it('ranks the top images over the range, at most the hour the server keeps at 1 s', () => {
    expect(topWindow(rangeById('15m'))).toEqual({ seconds: 900, phrase: 'the last 15 minutes' });
    expect(topWindow(rangeById('24h'))).toEqual({ seconds: 3600, phrase: 'the last hour' });
  });
});

describe('visibleSpan', () => {
  it('ends now and goes back the range', () => {
    expect(visibleSpan([idle(990)], 300, 1000.7)).toEqual({ from: 700, to: 1000 });
  });
  it('ends at the newest sample when the server clock is ahead', () => {
    expect(visibleSpan([idle(990), idle(1010)], 300, 1000)).toEqual({ from: 710, to: 1010 });
  });
});

describe('series', () => {
  const points = [idle(100), write(101), idle(102)];
  it('tells activity from a window of idle samples', () => {
    expect(hasActivity(points)).toBe(true);
    expect(hasActivity([idle(100), idle(101)])).toBe(false);
    expect(hasActivity([])).toBe(false);
  });
  it('splits a metric into read and write with latest and peak', () => {
    const [read, written] = seriesOf(points, 'bps');
    expect(read).toEqual({
      label: 'Read',
      points: [
        [100, 0],
        [101, 0],
        [102, 0],
      ],
      latest: 0,
      peak: null,
    });
    expect(written?.peak).toEqual({ value: 4 * 2 ** 20, t: 101 });
    expect(written?.latest).toBe(0);
    expect(seriesOf(points, 'iops')[1]?.peak).toEqual({ value: 1, t: 101 });
  });
  it('leaves latency undefined where no operation happened', () => {
    const [read, written] = seriesOf(points, 'latency');
    expect(read?.points.map((p) => p[1])).toEqual([null, null, null]);
    expect(read?.peak).toBeNull();
    expect(written?.points.map((p) => p[1])).toEqual([null, 9.5, null]);
    expect(written?.latest).toBeNull();
    expect(written?.peak).toEqual({ value: 9.5, t: 101 });
  });
  it('has no latest figure and no peak without samples', () => {
    expect(seriesOf([], 'iops').map((s) => [s.latest, s.peak])).toEqual([
      [null, null],
      [null, null],
      [null, null],
    ]);
  });
  it('adds a background series of what flatten, copy and deep copy moved, except for latency', () => {
    const p = { t: 5, read_iops: 0, write_iops: 0, read_bps: 0, write_bps: 0, read_latency_ms: 0, write_latency_ms: 0 };
    const busy = [p, { ...p, t: 6, background_read_bps: 1024, background_write_bps: 1024, background_iops: 2 }];
    expect(hasActivity(busy)).toBe(true);
    const bps = seriesOf(busy, 'bps');
    expect(bps.map((s) => s.label)).toEqual(['Read', 'Write', 'Background']);
    expect(bps[2]?.peak).toEqual({ value: 2048, t: 6 });
    expect(seriesOf(busy, 'iops')[2]?.latest).toBe(2);
    expect(seriesOf(busy, 'latency').map((s) => s.label)).toEqual(['Read', 'Write']);
  });
});
