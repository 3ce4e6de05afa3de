// Unit tests of the chart arithmetic: figures with units, nice value axes (binary units for byte rates), local-time
// labels with dates and the zone, and the text alternative.
import { describe, expect, it } from 'vitest';
import {
  formatClock,
  formatNumber,
  formatValue,
  niceStep,
  niceTicks,
  offsetLabel,
  summarize,
  timeLabels,
  valueAxis,
  zoneLabel,
} from './chart';

describe('formatNumber and formatValue', () => {
  it('keeps three significant digits below 1000 and groups above', () => {
    expect(formatNumber(0)).toBe('0');
    expect(formatNumber(0.5)).toBe('0.5');
    expect(formatNumber(9.577963)).toBe('9.58');
    expect(formatNumber(0.004123)).toBe('0.00412');
    expect(formatNumber(123.456)).toBe('123');
    expect(formatNumber(12345.6)).toBe('12,346');
    expect(formatNumber(Number.NaN)).toBe('–');
  });
  it('puts the unit on: IOPS, binary byte rates, milliseconds', () => {
    expect(formatValue(1, 'iops')).toBe('1 IOPS');
    expect(formatValue(1500, 'iops')).toBe('1,500 IOPS');
    expect(formatValue(0, 'bps')).toBe('0 B/s');
    expect(formatValue(512, 'bps')).toBe('512 B/s');
    expect(formatValue(1024, 'bps')).toBe('1 KiB/s');
    expect(formatValue(1536 * 1024, 'bps')).toBe('1.5 MiB/s');
    expect(formatValue(4 * 2 ** 20, 'bps')).toBe('4 MiB/s');
    expect(formatValue(3 * 2 ** 30, 'bps')).toBe('3 GiB/s');
    expect(formatValue(9.577963, 'ms')).toBe('9.58 ms');
  });
});

describe('value axes', () => {
  it('picks steps of 1, 2, 2.5 and 5 times a power of ten', () => {
    expect(niceStep(0.7)).toBe(1);
    expect(niceStep(1.3)).toBe(2);
    expect(niceStep(2.2)).toBe(2.5);
    expect(niceStep(3)).toBe(5);
    expect(niceStep(7)).toBe(10);
    expect(niceStep(180)).toBe(200);
    expect(niceStep(0.03)).toBeCloseTo(0.05);
  });
  it('runs from 0 to the first nice value at or above the maximum', () => {
    expect(niceTicks(4)).toEqual([0, 1, 2, 3, 4]);
    expect(niceTicks(10)).toEqual([0, 2.5, 5, 7.5, 10]);
    expect(niceTicks(730)).toEqual([0, 200, 400, 600, 800]);
    expect(niceTicks(0.3)).toEqual([0, 0.1, 0.2, 0.3]);
  });
  it('still has a scale when everything is 0', () => {
    expect(niceTicks(0)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(valueAxis(0, 'iops').max).toBe(1);
  });
  it('labels byte rates in the one binary unit that suits the maximum', () => {
    const axis = valueAxis(4 * 2 ** 20, 'bps');
    expect(axis.unit).toBe('MiB/s');
    expect(axis.labels).toEqual(['0', '1', '2', '3', '4']);
    expect(axis.ticks[1]).toBe(2 ** 20);
    expect(axis.max).toBe(4 * 2 ** 20);
    const small = valueAxis(700, 'bps');
    expect(small.unit).toBe('B/s');
    expect(small.labels).toEqual(['0', '200', '400', '600', '800']);
    const kib = valueAxis(1.5 * 1024, 'bps');
    expect(kib.unit).toBe('KiB/s');
    expect(kib.labels).toEqual(['0', '0.5', '1', '1.5']);
  });
  it('labels IOPS and latency axes with their unit', () => {
    expect(valueAxis(9.58, 'ms')).toEqual({
      max: 10,
      ticks: [0, 2.5, 5, 7.5, 10],
      labels: ['0', '2.5', '5', '7.5', '10'],
      unit: 'ms',
    });
    expect(valueAxis(1, 'iops').unit).toBe('IOPS');
  });
});

describe('local time labels', () => {
  it('formats local clock times with seconds only when asked', () => {
    const t = new Date(2026, 10, 25, 9, 5, 7).getTime() / 1000;
    expect(formatClock(t, false)).toBe('09:05');
    expect(formatClock(t, true)).toBe('09:05:07');
  });
  it('puts the date under the first tick and under each new day', () => {
    const t = new Date(2026, 10, 25, 22, 0, 0).getTime() / 1000;
    const labels = timeLabels([t, t + 3600, t + 7200, t + 10800]);
    expect(labels).toEqual(['22:00\nWed 25 Nov', '23:00', '00:00\nThu 26 Nov', '01:00']);
    expect(timeLabels([t, t + 10])[0]).toBe('22:00:00\nWed 25 Nov');
  });
  it('names the zone with its offset from UTC', () => {
    expect(offsetLabel(0)).toMatch(/^UTC[+-]\d\d:\d\d$/);
    expect(zoneLabel(0)).toContain(offsetLabel(0));
  });
});

describe('summarize', () => {
  const t = new Date(2026, 10, 25, 16, 2, 33).getTime() / 1000;
  it('gives each series its peak and latest figure', () => {
    expect(
      summarize(
        'Read / Write Throughput',
        'the last 5 minutes',
        [
          { label: 'Read', latest: 0, peak: null },
          { label: 'Write', latest: 0, peak: { value: 4 * 2 ** 20, t } },
        ],
        'bps',
      ),
    ).toBe(
      'Read / Write Throughput over the last 5 minutes: Read: none; Write: peak 4 MiB/s at 16:02:33 Wed 25 Nov, latest 0 B/s.',
    );
  });
  it('says when the window saw no I/O', () => {
    expect(summarize('Read / Write IOPS', 'the last hour', [{ label: 'Read', latest: 0, peak: null }], 'iops')).toBe(
      'Read / Write IOPS over the last hour: no I/O in this window.',
    );
  });
});
