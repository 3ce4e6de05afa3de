// Messages shown in the corner: results of actions and the server's refusals, announced to screen readers.

import { ApiError } from '../api/client';
import { createStore } from './store';

export interface Notice {
  id: number;
  kind: 'success' | 'error' | 'info';
  text: string;
  /** What to do about it (the seed's troubleshooting advice). */
  hint?: string;
}

export const notices = createStore<Notice[]>([]);
let nextId = 1;

export function dismiss(id: number): void {
  notices.set(notices.get().filter((n) => n.id !== id));
}

export function notify(kind: Notice['kind'], text: string, hint?: string): void {
  const notice: Notice = hint ? { id: nextId, kind, text, hint } : { id: nextId, kind, text };
  nextId += 1;
  notices.set([...notices.get(), notice].slice(-3));
  // Refusals stay until dismissed so they can be read; confirmations go away by themselves.
  if (kind !== 'error') setTimeout(() => dismiss(notice.id), 6000);
}

/** The text of any error as a person should read it: the server's message and its code. */
export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.status === 0 ? error.detail : `${error.detail} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

export function notifyError(error: unknown, hint?: string): void {
  notify('error', errorText(error), hint);
}
