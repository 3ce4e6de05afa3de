// Configuration values as people read them: byte counts and byte rates in binary units, with the raw figure kept.

import { formatBytes } from './units';

/** `20 MiB/s` for a rate option, `4 MiB` for a size option; null when the value is best shown as it is. */
export function humanConfigValue(name: string, value: string): string | null {
  if (!/^\d+$/.test(value.trim())) return null;
  const n = Number(value);
  if (n < 1024 || !Number.isSafeInteger(n)) return null;
  if (/_bps(_|$)/.test(name)) return `${formatBytes(n)}/s`;
  if (/(size|bytes|_dirty)(_|$)/.test(name)) return formatBytes(n);
  return null;
}
