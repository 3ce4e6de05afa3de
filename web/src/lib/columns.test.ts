import { describe, expect, it } from 'vitest';
import { fittingColumns, fixedWidth, type ColumnSpec } from './columns';

const COLUMNS: ColumnSpec<string>[] = [
  { key: 'expand', width: 2 },
  { key: 'pool', width: 5, drop: 6 },
  { key: 'size', width: 5 },
  { key: 'parent', width: 10, drop: 2 },
  { key: 'objects', width: 8, drop: 1 },
  { key: 'actions', width: 3 },
];

describe('fittingColumns', () => {
  it('shows every column when they fit, or before the width is known', () => {
    // 33 rem fixed + 12 rem for the name = 45 rem = 630 px at 14 px.
    expect([...fittingColumns(COLUMNS, 630, 14, 12)]).toEqual([
      'expand',
      'pool',
      'size',
      'parent',
      'objects',
      'actions',
    ]);
    expect(fittingColumns(COLUMNS, 0, 14, 12).size).toBe(6);
  });
  it('leaves out the least important columns first, only as many as needed', () => {
    expect([...fittingColumns(COLUMNS, 629, 14, 12)]).toEqual(['expand', 'pool', 'size', 'parent', 'actions']);
    expect([...fittingColumns(COLUMNS, 400, 14, 12)]).toEqual(['expand', 'pool', 'size', 'actions']);
  });
  it('keeps the columns that are never dropped even when the name cannot get its minimum', () => {
    expect([...fittingColumns(COLUMNS, 100, 14, 12)]).toEqual(['expand', 'size', 'actions']);
  });
  it('sums the widths of the shown columns', () => {
    expect(fixedWidth(COLUMNS, new Set(['expand', 'size']))).toBe(7);
  });
});
