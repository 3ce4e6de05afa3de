// Numbered paging: which page numbers a pager shows (the first, the last, and two either side of the current one,
// with gaps between), and the "21–40 of 69 images" line.

import { plural } from './plural';

/** Page numbers (1-based) to show, with null for a gap. */
export function pageNumbers(current: number, count: number): (number | null)[] {
  if (count <= 7) return Array.from({ length: count }, (_, i) => i + 1);
  const shown = new Set([1, count, current - 2, current - 1, current, current + 1, current + 2]);
  const pages = [...shown].filter((p) => p >= 1 && p <= count).sort((a, b) => a - b);
  const out: (number | null)[] = [];
  pages.forEach((p, i) => {
    const prev = pages[i - 1];
    if (prev !== undefined && p - prev === 2) out.push(prev + 1);
    else if (prev !== undefined && p - prev > 2) out.push(null);
    out.push(p);
  });
  return out;
}

/** `1–25 of 69 images`, `1 image`, `No images`. */
export function rangeText(offset: number, shown: number, total: number, noun: string, many = `${noun}s`): string {
  if (total === 0) return `No ${many}`;
  if (total === 1) return plural(1, noun, many);
  return `${(offset + 1).toLocaleString('en-US')}–${(offset + shown).toLocaleString('en-US')} of ${plural(total, noun, many)}`;
}
