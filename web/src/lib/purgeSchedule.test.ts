// Unit tests of the purge schedule helpers: the labels the Trash tab shows and the checks of its Add form.
import { describe, expect, it } from 'vitest';
import { describeItem, intervalError, levelLabel, startTimeError } from './purgeSchedule';

describe('purge schedule display', () => {
  it('names the level and the items as the server reports them', () => {
    expect(levelLabel({ pool_name: null, namespace: null })).toBe('all pools');
    expect(levelLabel({ pool_name: 'rbd', namespace: null })).toBe('rbd (all namespaces)');
    expect(levelLabel({ pool_name: 'rbd', namespace: 'tenant' })).toBe('rbd/tenant');
    expect(describeItem({ interval: '1d', start_time: '02:00:00' })).toBe('every 1d from 02:00 UTC');
    expect(describeItem({ interval: '12h', start_time: null })).toBe('every 12h');
  });
});

describe('purge schedule form checks', () => {
  it('accepts the intervals the server accepts', () => {
    for (const ok of ['30m', '12h', '1d', '90', '366d']) expect(intervalError(ok)).toBeNull();
    for (const bad of ['', '0', '0h', '1w', '1.5h', 'daily', '367d']) expect(intervalError(bad)).not.toBeNull();
  });
  it('accepts an empty or HH:MM start time', () => {
    expect(startTimeError('')).toBeNull();
    expect(startTimeError('02:00')).toBeNull();
    for (const bad of ['2:00', '24:00', '12:60', 'noon']) expect(startTimeError(bad)).not.toBeNull();
  });
});
