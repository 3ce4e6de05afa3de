// Which columns of a fixed-layout table fit a given width: every column has a fixed width except one flexible column
// (the image name) that takes the rest; when the rest would be less than the flexible column's minimum, the least
// important optional columns are left out, one at a time, until it fits (or nothing optional is left).

export interface ColumnSpec<K extends string> {
  key: K;
  /** Fixed width in rem. */
  width: number;
  /** Left out when space runs short: lower goes first. Omitted: always shown. */
  drop?: number;
}

/** Sum of the fixed widths (rem) of `columns` that are in `shown`. */
export function fixedWidth<K extends string>(columns: readonly ColumnSpec<K>[], shown: ReadonlySet<K>): number {
  return columns.reduce((sum, c) => sum + (shown.has(c.key) ? c.width : 0), 0);
}

/**
 * The columns to show in `available` px (0 or less: not measured yet, so all), with `remPx` px per rem, leaving the
 * flexible column at least `flexMin` rem.
 */
export function fittingColumns<K extends string>(
  columns: readonly ColumnSpec<K>[],
  available: number,
  remPx: number,
  flexMin: number,
): Set<K> {
  const shown = new Set(columns.map((c) => c.key));
  if (available <= 0) return shown;
  const droppable = columns.filter((c) => c.drop !== undefined).sort((a, b) => (a.drop ?? 0) - (b.drop ?? 0));
  for (const column of droppable) {
    if ((fixedWidth(columns, shown) + flexMin) * remPx <= available) break;
    shown.delete(column.key);
  }
  return shown;
}
