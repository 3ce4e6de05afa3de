// Unit tests of the size units: parsing a size field with its unit, formatting bytes, prefilling a field.
import { describe, expect, it } from 'vitest';
import { formatBytes, parseSize, splitSize } from './units';

describe('parseSize', () => {
  it('multiplies by the binary unit', () => {
    expect(parseSize('10', 'GiB')).toEqual({ ok: true, bytes: 10 * 2 ** 30 });
    expect(parseSize('1.5', 'KiB')).toEqual({ ok: true, bytes: 1536 });
    expect(parseSize(' 2 ', 'PiB')).toEqual({ ok: true, bytes: 2 * 2 ** 50 });
  });
  it('refuses empty, non-numeric, negative and fractional-byte sizes', () => {
    expect(parseSize('', 'GiB')).toEqual({ ok: false, error: 'Size is required.' });
    expect(parseSize('ten', 'GiB').ok).toBe(false);
    expect(parseSize('-1', 'GiB').ok).toBe(false);
    expect(parseSize('1e3', 'GiB').ok).toBe(false);
    const fractional = parseSize('0.3', 'KiB');
    expect(fractional.ok).toBe(false);
    if (!fractional.ok) expect(fractional.error).toContain('whole number of bytes');
  });
  it('refuses sizes past what the page handles exactly', () => {
    expect(parseSize('8', 'PiB').ok).toBe(false);
    expect(parseSize('7', 'PiB').ok).toBe(true);
  });
});

describe('formatBytes', () => {
  it('picks the largest unit that keeps the number at least 1', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(null)).toBe('?');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1024)).toBe('1 KiB');
    expect(formatBytes(1536 * 1024)).toBe('1.5 MiB');
    expect(formatBytes(10 * 2 ** 30)).toBe('10 GiB');
    expect(formatBytes(2 ** 40 + 2 ** 30)).toBe('1 TiB');
  });
});

describe('splitSize', () => {
  it('prefills with the largest exact unit', () => {
    expect(splitSize(10 * 2 ** 30)).toEqual({ value: '10', unit: 'GiB' });
    expect(splitSize(1536 * 2 ** 20)).toEqual({ value: '1536', unit: 'MiB' });
    expect(splitSize(4096)).toEqual({ value: '4', unit: 'KiB' });
  });
});
