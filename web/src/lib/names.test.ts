// Unit tests of the name rules the forms check before the server does.
import { describe, expect, it } from 'vitest';
import { defaultSnapshotName, imageSpec, nameError } from './names';

describe('nameError', () => {
  it('accepts ordinary names', () => {
    expect(nameError('Image', 'vm1')).toBeNull();
    expect(nameError('Snapshot', 'before-upgrade_2026-11-25T14:20:17Z')).toBeNull();
  });
  it('requires a name', () => {
    expect(nameError('Image', '')).toBe('Image name is required.');
  });
  it("refuses '/' and '@' as the reference does", () => {
    expect(nameError('Image', 'a/b')).toBe("'/' and '@' are not allowed.");
    expect(nameError('Namespace', 'x@y')).toBe("'/' and '@' are not allowed.");
  });
  it('refuses control characters, long names and dot-led snapshot names', () => {
    expect(nameError('Image', 'a\nb')).toBe('Control characters are not allowed.');
    expect(nameError('Pool', 'x'.repeat(251))).toContain('limit is 250');
    expect(nameError('Image', 'é'.repeat(126))).toContain('252 bytes');
    expect(nameError('Snapshot', '.hidden')).toContain('dot');
    expect(nameError('Image', '.fine-for-images')).toBeNull();
  });
});

describe('specs and defaults', () => {
  it('writes pool[/namespace]/image', () => {
    expect(imageSpec('rbd', null, 'vm1')).toBe('rbd/vm1');
    expect(imageSpec('rbd', 'tenant', 'vm1')).toBe('rbd/tenant/vm1');
  });
  it('names a snapshot after the image and the time', () => {
    expect(defaultSnapshotName('vm1', new Date(Date.UTC(2026, 10, 25, 14, 20, 17, 123)))).toBe(
      'vm1_2026-11-25T14:20:17Z',
    );
  });
});
