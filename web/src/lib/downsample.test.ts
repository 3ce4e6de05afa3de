import { describe, expect, it } from 'vitest';
import { downsample } from './downsample';

describe('downsample', () => {
  it('keeps every sample when there are more pixels than samples', () => {
    const t = [100, 101, 102];
    const d = downsample(t, [[1, 2, 3]], 100, 102, 500, 1);
    expect(d.step).toBe(1);
    expect(d.t).toEqual([100, 101, 102]);
    expect(d.series[0]?.avg).toEqual([1, 2, 3]);
  });

  it('reduces an hour of seconds to one bucket per pixel with min, max and average', () => {
    const t = Array.from({ length: 3600 }, (_, i) => 3600 + i);
    // Idle except one 100-IOPS second every minute: the average is low, the maximum keeps the burst.
    const ys = t.map((_, i) => (i % 60 === 0 ? 100 : 0));
    const d = downsample(t, [ys], 3600, 7199, 300, 1);
    expect(d.step).toBe(12);
    expect(d.t.length).toBe(300);
    const s = d.series[0];
    expect(s?.max.filter((v) => v === 100).length).toBe(60);
    expect(s?.min.every((v) => v === 0)).toBe(true);
    expect(s?.avg[0]).toBeCloseTo(100 / 12);
    expect(s?.avg[1]).toBe(0);
  });

  it('leaves gaps where samples are missing or have no value', () => {
    const d = downsample([0, 1, 3], [[5, null, 7]], 0, 3, 100, 1);
    expect(d.series[0]?.avg).toEqual([5, null, null, 7]);
    expect(d.series[0]?.max).toEqual([5, null, null, 7]);
  });

  it('never buckets finer than the resolution', () => {
    const d = downsample([0, 60, 120], [[1, 2, 3]], 0, 120, 1000, 60);
    expect(d.step).toBe(60);
    expect(d.series[0]?.avg).toEqual([1, 2, 3]);
  });
});
