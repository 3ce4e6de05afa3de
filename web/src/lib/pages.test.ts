import { describe, expect, it } from 'vitest';
import { pageNumbers, rangeText } from './pages';

describe('pageNumbers', () => {
  it('shows every page when there are few', () => {
    expect(pageNumbers(1, 3)).toEqual([1, 2, 3]);
  });
  it('keeps the ends and the neighbours of the current page, with gaps', () => {
    expect(pageNumbers(1, 20)).toEqual([1, 2, 3, null, 20]);
    expect(pageNumbers(10, 20)).toEqual([1, null, 8, 9, 10, 11, 12, null, 20]);
    expect(pageNumbers(4, 20)).toEqual([1, 2, 3, 4, 5, 6, null, 20]);
  });
});

describe('rangeText', () => {
  it('counts with plurals', () => {
    expect(rangeText(0, 1, 1, 'image')).toBe('1 image');
    expect(rangeText(0, 0, 0, 'image')).toBe('No images');
    expect(rangeText(25, 25, 69, 'image')).toBe('26–50 of 69 images');
    expect(rangeText(0, 25, 10000, 'image')).toBe('1–25 of 10,000 images');
  });
});
