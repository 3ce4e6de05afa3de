// The logged-in user: token, name and permissions, kept in sessionStorage so a reload keeps the login for this tab only.

import type { Endpoint } from '../api/endpoints';
import type { Permissions } from '../api/types';
import { createStore, useStore } from './store';

export interface Session {
  token: string;
  username: string;
  permissions: Permissions;
}

const KEY = 'basalt.session';

function load(): Session | null {
  try {
    const text = sessionStorage.getItem(KEY);
    return text ? (JSON.parse(text) as Session) : null;
  } catch {
    return null;
  }
}

export const session = createStore<Session | null>(load());

session.subscribe((value) => {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
});

/** True when the session's roles allow the endpoint (the server checks again; this only hides controls). */
export function allowed(current: Session | null, endpoint: Endpoint): boolean {
  if (endpoint.need === null) return true;
  if (!current) return false;
  if (endpoint.need === 'user') return true;
  return current.permissions[endpoint.need.scope]?.includes(endpoint.need.permission) ?? false;
}

/** The current session and a permission check bound to it. */
export function useSession(): { current: Session | null; can: (endpoint: Endpoint) => boolean } {
  const current = useStore(session);
  return { current, can: (endpoint) => allowed(current, endpoint) };
}
