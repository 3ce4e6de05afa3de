// Byte sizes: the binary units of the size inputs (KiB..PiB), parsing a value with its unit and formatting bytes.

export const SIZE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;
export type SizeUnit = (typeof SIZE_UNITS)[number];

/** The units the image size field offers (the reference form's list; GiB is the default). */
export const IMAGE_SIZE_UNITS: readonly SizeUnit[] = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function unitBytes(unit: SizeUnit): number {
  return 1024 ** SIZE_UNITS.indexOf(unit);
}

/** The largest size this page handles exactly (2^53 - 1 bytes, just under 8 PiB). */
export const SIZE_MAX_BYTES = Number.MAX_SAFE_INTEGER;

export type SizeResult = { ok: true; bytes: number } | { ok: false; error: string };

/** Turns the text of a size field and its unit into bytes, or says what is wrong. */
export function parseSize(text: string, unit: SizeUnit, what = 'Size'): SizeResult {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: false, error: `${what} is required.` };
  if (!/^\d+(\.\d+)?$/.test(trimmed)) return { ok: false, error: `${what} must be a number, e.g. 10 (in ${unit}).` };
  const value = Number(trimmed);
  const bytes = value * unitBytes(unit);
  if (bytes > SIZE_MAX_BYTES) return { ok: false, error: `${what} is too large: at most 8 PiB.` };
  if (!Number.isInteger(bytes)) {
    return { ok: false, error: `${what} must be a whole number of bytes: ${trimmed} ${unit} is not.` };
  }
  return { ok: true, bytes };
}

/** How a figure the server could not read is shown (as `basalt ls -l` shows it). */
export const UNKNOWN = '?';

/**
 * Formats bytes with the largest unit that keeps the number at least 1, e.g. `10 GiB`, `1.5 MiB`, `0 B`; `?` for null (a figure the server could not read).
 */
export function formatBytes(bytes: number | null): string {
  if (bytes === null) return UNKNOWN;
  let unit = 0;
  while (unit < SIZE_UNITS.length - 1 && bytes >= 1024 ** (unit + 1)) unit += 1;
  const value = bytes / 1024 ** unit;
  const text = Number.isInteger(value) ? String(value) : value.toFixed(2).replace(/\.?0+$/, '');
  return `${text} ${SIZE_UNITS[unit]}`;
}

/** Splits bytes into the largest unit that divides them exactly, for prefilling a size field. */
export function splitSize(
  bytes: number,
  units: readonly SizeUnit[] = IMAGE_SIZE_UNITS,
): { value: string; unit: SizeUnit } {
  for (let i = units.length - 1; i >= 0; i -= 1) {
    const unit = units[i] as SizeUnit;
    if (bytes % unitBytes(unit) === 0 && bytes >= unitBytes(unit))
      return { value: String(bytes / unitBytes(unit)), unit };
  }
  const smallest = units[0] as SizeUnit;
  return { value: String(bytes / unitBytes(smallest)), unit: smallest };
}

/** Object sizes (and stripe units) the engine accepts: powers of two from 4 KiB to 32 MiB. */
export const OBJECT_SIZES: readonly number[] = Array.from({ length: 14 }, (_, i) => 2 ** (12 + i));
export const OBJECT_SIZE_DEFAULT = 4 * 1024 * 1024;
