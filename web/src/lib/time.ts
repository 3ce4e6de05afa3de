// Times: the API's RFC 3339 UTC strings shown in local time, and the Move to Trash dialog's expiration field.

const pad = (n: number) => String(n).padStart(2, '0');

/** `2026-11-25 15:20:17 UTC+01:00` in the browser's time zone; the input unchanged when it is not a time;
 * `?` for null. */
export function formatTime(iso: string | null): string {
  if (iso === null) return '?';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const off = -d.getTimezoneOffset();
  const zone = `UTC${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`;
}

/** The value a `datetime-local` input shows for a moment. */
export function toLocalInput(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export type Expiration = { ok: true; body: { expires_at: string } | { delay: 0 } } | { ok: false; error: string };

/**
 * Reads the "Protection expires at" field (local time from a `datetime-local` input): empty means the image may be
 * purged at once; otherwise the time must be in the future and is sent as RFC 3339 UTC.
 */
export function expirationFromInput(value: string, now: Date): Expiration {
  if (value.trim() === '') return { ok: true, body: { delay: 0 } };
  const at = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value) || Number.isNaN(at.getTime())) {
    return { ok: false, error: 'Use a date and time, e.g. 2030-01-31 12:00.' };
  }
  if (at.getTime() <= now.getTime()) return { ok: false, error: 'The expiration time is in the past.' };
  return { ok: true, body: { expires_at: at.toISOString().replace(/\.\d{3}Z$/, 'Z') } };
}

/** True once a trash entry's protection has ended, so it may be purged without overriding it. */
export function isExpired(deferment_end_time: string, now: Date): boolean {
  return new Date(deferment_end_time).getTime() <= now.getTime();
}
