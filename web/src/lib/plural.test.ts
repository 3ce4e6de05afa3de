import { describe, expect, it } from 'vitest';
import { plural, verb } from './plural';

describe('plural', () => {
  it('agrees nouns and verbs with counts', () => {
    expect(plural(1, 'image')).toBe('1 image');
    expect(plural(0, 'image')).toBe('0 images');
    expect(plural(12345, 'image')).toBe('12,345 images');
    expect(plural(2, 'entry', 'entries')).toBe('2 entries');
    expect(`${plural(1, 'client')} ${verb(1, 'has', 'have')} it open`).toBe('1 client has it open');
    expect(`${plural(3, 'client')} ${verb(3, 'has', 'have')} it open`).toBe('3 clients have it open');
  });
});
