import { describe, expect, it } from 'vitest';
import { describeCode } from './errno';

describe('describeCode', () => {
  it('turns errno names and numbers into the same words', () => {
    expect(describeCode('EACCES')).toEqual({ words: 'Permission denied', details: 'EACCES (errno 13)' });
    expect(describeCode('13')).toEqual({ words: 'Permission denied', details: 'EACCES (errno 13)' });
    expect(describeCode('ENOTEMPTY').words).toBe('Not empty');
    expect(describeCode('17').details).toBe('EEXIST (errno 17)');
  });
  it('falls back to the HTTP status and keeps an unknown code', () => {
    expect(describeCode('EWHATEVER', 400)).toEqual({ words: 'Invalid request', details: 'EWHATEVER' });
    expect(describeCode('', 503)).toEqual({ words: 'Unavailable', details: 'HTTP 503' });
  });
});
