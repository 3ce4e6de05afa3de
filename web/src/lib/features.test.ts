// Unit tests of the feature checkbox rules: dependencies, the object-map/fast-diff interlock, edit-time locks.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FEATURES,
  featureLockedReason,
  featuresToSend,
  toggleFeature,
  toggleFeatureRemembering,
  type FeatureName,
} from './features';

const set = (...names: FeatureName[]) => new Set<FeatureName>(names);

describe('toggleFeature', () => {
  it('unchecking exclusive-lock clears object-map and fast-diff', () => {
    const next = toggleFeature(set(...DEFAULT_FEATURES), 'exclusive-lock', false);
    expect([...next].sort()).toEqual(['deep-flatten', 'layering']);
  });
  it('checking a feature whose requirement is unchecked changes nothing', () => {
    expect(toggleFeature(set('layering'), 'object-map', true)).toEqual(set('layering'));
    expect(toggleFeature(set('exclusive-lock'), 'fast-diff', true)).toEqual(set('exclusive-lock'));
  });
  it('checking object-map checks fast-diff; unchecking fast-diff unchecks object-map', () => {
    const on = toggleFeature(set('exclusive-lock'), 'object-map', true);
    expect(on).toEqual(set('exclusive-lock', 'object-map', 'fast-diff'));
    expect(toggleFeature(on, 'fast-diff', false)).toEqual(set('exclusive-lock'));
    expect(toggleFeature(on, 'object-map', false)).toEqual(set('exclusive-lock'));
  });
  it('leaves unrelated features alone', () => {
    expect(toggleFeature(set('layering'), 'striping', true)).toEqual(set('layering', 'striping'));
    expect(toggleFeature(set('layering', 'deep-flatten'), 'layering', false)).toEqual(set('deep-flatten'));
  });
});

describe('featureLockedReason', () => {
  it('disables dependents until their requirement is checked', () => {
    expect(featureLockedReason('object-map', set(), 'create')).toBe('Needs exclusive-lock.');
    expect(featureLockedReason('fast-diff', set('exclusive-lock'), 'create')).toBe('Needs object-map.');
    expect(featureLockedReason('object-map', set('exclusive-lock'), 'create')).toBeNull();
    expect(featureLockedReason('layering', set(), 'create')).toBeNull();
  });
  it('locks what cannot change after creation', () => {
    expect(featureLockedReason('layering', set('layering'), 'edit')).toContain('fixed');
    expect(featureLockedReason('striping', set(), 'edit')).toContain('fixed');
    expect(featureLockedReason('exclusive-lock', set(), 'edit')).toBeNull();
    expect(featureLockedReason('deep-flatten', set(), 'edit', set('deep-flatten'))).toBeNull();
    expect(featureLockedReason('deep-flatten', set(), 'edit', set())).toContain('never enabled again');
  });
});

describe('featuresToSend', () => {
  it('never sends striping, which the server derives from the layout', () => {
    expect(featuresToSend(set('striping', 'layering'))).toEqual(['layering']);
  });
});

describe('toggleFeatureRemembering', () => {
  it('brings object-map and fast-diff back when exclusive-lock is ticked again', () => {
    const all = new Set<FeatureName>(['layering', 'exclusive-lock', 'object-map', 'fast-diff']);
    const off = toggleFeatureRemembering(all, 'exclusive-lock', false, {});
    expect([...off.features].sort()).toEqual(['layering']);
    const on = toggleFeatureRemembering(off.features, 'exclusive-lock', true, off.memory);
    expect([...on.features].sort()).toEqual(['exclusive-lock', 'fast-diff', 'layering', 'object-map']);
    expect(on.memory).toEqual({});
  });
  it('restores nothing that was not ticked before', () => {
    const some = new Set<FeatureName>(['exclusive-lock']);
    const off = toggleFeatureRemembering(some, 'exclusive-lock', false, {});
    expect([...toggleFeatureRemembering(off.features, 'exclusive-lock', true, off.memory).features]).toEqual([
      'exclusive-lock',
    ]);
  });
});
