// Messages shown in the corner: results of actions and the server's refusals, announced to screen readers.

import { ApiError } from '../api/client';
import { describeCode } from '../lib/errno';
import { createStore } from './store';

export interface Notice {
  id: number;
  kind: 'success' | 'error' | 'info';
  text: string;
  /** What to do about it (the seed's troubleshooting advice). */
  hint?: string;
  /** The error's code, for reports: `EACCES (errno 13), HTTP 403`. */
  details?: string;
}

export const notices = createStore<Notice[]>([]);
let nextId = 1;

export function dismiss(id: number): void {
  notices.set(notices.get().filter((n) => n.id !== id));
}

export function notify(kind: Notice['kind'], text: string, hint?: string, details?: string): void {
  const notice: Notice = { id: nextId, kind, text };
  if (hint) notice.hint = hint;
  if (details) notice.details = details;
  nextId += 1;
  notices.set([...notices.get(), notice].slice(-3));
  // Refusals stay until dismissed so they can be read; confirmations go away by themselves.
  if (kind !== 'error') setTimeout(() => dismiss(notice.id), 6000);
}

/** The text of any error as a person should read it: what the code means in words, then the server's message. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 0) return error.detail;
    const { words } = describeCode(error.code, error.status);
    // A message that already says it ("image 'rbd/a' already exists") is not prefixed with the same words again.
    if (error.detail.toLowerCase().includes(words.toLowerCase()))
      return error.detail.charAt(0).toUpperCase() + error.detail.slice(1);
    return `${words}: ${error.detail}`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** The error's code for the details line (`EACCES (errno 13), HTTP 403`), or null for errors without one. */
export function errorDetails(error: unknown): string | null {
  if (!(error instanceof ApiError) || error.status === 0) return null;
  return `Code ${describeCode(error.code, error.status).details}, HTTP ${error.status}`;
}

export function notifyError(error: unknown, hint?: string): void {
  notify('error', errorText(error), hint, errorDetails(error) ?? undefined);
}
