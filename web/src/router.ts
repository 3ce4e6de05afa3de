// Client-side routes on the History API (the server answers index.html for them), with a hook for the current path.

import { createStore, useStore } from './state/store';

export const path = createStore(window.location.pathname);

window.addEventListener('popstate', () => path.set(window.location.pathname));

export function navigate(to: string, replace = false): void {
  if (to === window.location.pathname) return;
  if (replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  path.set(to);
}

export function usePath(): string {
  return useStore(path);
}

export const ROUTES = {
  login: '/login',
  images: '/block/rbd',
  namespaces: '/block/rbd/namespaces',
  trash: '/block/rbd/trash',
  performance: '/block/rbd/performance',
  pools: '/pool',
  password: '/user/password',
  users: '/user-management/users',
  roles: '/user-management/roles',
  audit: '/user-management/audit',
  alerts: '/monitoring/alerts',
} as const;
