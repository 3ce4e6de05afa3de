// Trash purge schedules as the dashboard shows and checks them, with the server's rules (`30m`, `12h`, `1d`; a time
// of day in UTC), so a bad value is caught in the form before any request.

import type { PurgeSchedule, PurgeScheduleItem } from '../api/types';

/** `rbd`, `rbd/tenant`, or `all pools`. */
export function levelLabel(s: Pick<PurgeSchedule, 'pool_name' | 'namespace'>): string {
  if (!s.pool_name) return 'all pools';
  return s.namespace ? `${s.pool_name}/${s.namespace}` : `${s.pool_name} (all namespaces)`;
}

/** `every 1d at 02:00 UTC`, `every 12h`. */
export function describeItem(item: PurgeScheduleItem): string {
  const start = item.start_time ? ` from ${item.start_time.slice(0, 5)} UTC` : '';
  return `every ${item.interval}${start}`;
}

const MAX_MINUTES = 366 * 24 * 60;

/** Why an interval is refused, or null. */
export function intervalError(text: string): string | null {
  const m = /^(\d{1,9})([mhd]?)$/.exec(text.trim());
  if (!m) return 'Use a number of minutes, hours or days, e.g. 30m, 12h or 1d.';
  const n = Number(m[1]);
  const minutes = m[2] === 'd' ? n * 1440 : m[2] === 'h' ? n * 60 : n;
  if (minutes < 1 || minutes > MAX_MINUTES) return 'The interval must be between 1 minute and 366 days.';
  return null;
}

/** Why a start time is refused (empty is allowed), or null. */
export function startTimeError(text: string): string | null {
  if (text.trim() === '') return null;
  const m = /^(\d{2}):(\d{2})$/.exec(text.trim());
  if (!m || Number(m[1]) > 23 || Number(m[2]) > 59) return 'Use a time of day in UTC, e.g. 02:00.';
  return null;
}
