// Unit tests of the time helpers: local display and the Move to Trash expiration rules.
import { describe, expect, it } from 'vitest';
import { expirationFromInput, formatTime, isExpired, toLocalInput } from './time';

const now = new Date(2026, 10, 25, 12, 0, 0);

describe('expirationFromInput', () => {
  it('allows an empty field: purgeable at once', () => {
    expect(expirationFromInput('', now)).toEqual({ ok: true, body: { delay: 0 } });
  });
  it('sends a future local time as UTC', () => {
    const result = expirationFromInput('2026-11-26T12:00', now);
    expect(result).toEqual({
      ok: true,
      body: { expires_at: new Date(2026, 10, 26, 12, 0).toISOString().replace('.000', '') },
    });
  });
  it('refuses past and malformed times', () => {
    expect(expirationFromInput('2026-11-25T11:59', now)).toEqual({
      ok: false,
      error: 'The expiration time is in the past.',
    });
    expect(expirationFromInput('tomorrow', now).ok).toBe(false);
  });
});

describe('display', () => {
  it('shows local time and round-trips the input format', () => {
    expect(formatTime(new Date(2026, 0, 2, 3, 4, 5).toISOString())).toMatch(/^2026-01-02 03:04:05 UTC[+-]\d\d:\d\d$/);
    expect(formatTime('not a time')).toBe('not a time');
    expect(formatTime(null)).toBe('?');
    expect(toLocalInput(new Date(2026, 0, 2, 3, 4, 5))).toBe('2026-01-02T03:04');
  });
  it('knows when protection has ended', () => {
    expect(isExpired(new Date(2026, 10, 25, 11).toISOString(), now)).toBe(true);
    expect(isExpired(new Date(2026, 10, 25, 13).toISOString(), now)).toBe(false);
  });
});
