import { describe, expect, it } from 'vitest';
import type { Task } from '../api/types';
import { formatDuration, taskProgress } from './taskProgress';

const task = (progress: number, begin: string): Task => ({
  id: 't',
  name: 'rbd/flatten',
  metadata: { image_spec: 'rbd/c1' },
  begin_time: begin,
  end_time: null,
  progress,
  success: null,
  exception: null,
});

describe('taskProgress', () => {
  const now = Date.parse('2026-12-03T02:00:00Z');
  it('estimates the time left from the rate so far', () => {
    const p = taskProgress(task(25, '2026-12-03T01:59:00Z'), now);
    expect(p.percent).toBe(25);
    expect(p.etaSeconds).toBe(180);
    expect(p.text).toBe('Flattening 25% · about 3 min left');
  });
  it('gives no estimate before any progress', () => {
    expect(taskProgress(task(0, '2026-12-03T01:59:59Z'), now).text).toBe('Flattening 0% · estimating time left');
  });
  it('formats durations', () => {
    expect(formatDuration(42)).toBe('42 s');
    expect(formatDuration(150)).toBe('3 min');
    expect(formatDuration(4800)).toBe('1 h 20 min');
  });
});
