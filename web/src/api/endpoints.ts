// Every API operation the dashboard calls, with the permission it needs: one table that drives the client, hides
// controls the user may not use, and is checked against the server's /api/openapi.json by the end-to-end tests.

import type { Permission } from './types';

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** `null`: no login needed; `'user'`: any logged-in user; else a scope and permission. */
export type Need = null | 'user' | { scope: string; permission: Permission };

export interface Endpoint {
  method: Method;
  path: string;
  need: Need;
}

const img = (permission: Permission) => ({ scope: 'rbd-image', permission });
const IMAGE = '/api/block/image/{image_spec}';
const SNAP = `${IMAGE}/snap/{snap}`;

export const EP = {
  login: { method: 'POST', path: '/api/auth', need: null },
  logout: { method: 'POST', path: '/api/auth/logout', need: 'user' },
  authCheck: { method: 'GET', path: '/api/auth/check', need: 'user' },
  changePassword: { method: 'POST', path: '/api/user/{username}/change_password', need: 'user' },
  tasks: { method: 'GET', path: '/api/task', need: 'user' },
  listPools: { method: 'GET', path: '/api/pool', need: { scope: 'pool', permission: 'read' } },
  createPool: { method: 'POST', path: '/api/pool', need: { scope: 'pool', permission: 'create' } },
  updatePool: { method: 'PUT', path: '/api/pool/{pool}', need: { scope: 'pool', permission: 'update' } },
  deletePool: { method: 'DELETE', path: '/api/pool/{pool}', need: { scope: 'pool', permission: 'delete' } },
  listNamespaces: { method: 'GET', path: '/api/block/pool/{pool}/namespace', need: img('read') },
  createNamespace: { method: 'POST', path: '/api/block/pool/{pool}/namespace', need: img('create') },
  deleteNamespace: { method: 'DELETE', path: '/api/block/pool/{pool}/namespace/{namespace}', need: img('delete') },
  imageConfig: { method: 'GET', path: '/api/block/config/image/{image_spec}', need: img('read') },
  setImageConfig: { method: 'PUT', path: '/api/block/config/image/{image_spec}', need: img('update') },
  listImages: { method: 'GET', path: '/api/block/image', need: img('read') },
  createImage: { method: 'POST', path: '/api/block/image', need: img('create') },
  getImage: { method: 'GET', path: IMAGE, need: img('read') },
  editImage: { method: 'PUT', path: IMAGE, need: img('update') },
  deleteImage: { method: 'DELETE', path: IMAGE, need: img('delete') },
  copyImage: { method: 'POST', path: `${IMAGE}/copy`, need: img('create') },
  deepCopyImage: { method: 'POST', path: `${IMAGE}/deep_copy`, need: img('create') },
  flatten: { method: 'POST', path: `${IMAGE}/flatten`, need: img('update') },
  moveTrash: { method: 'POST', path: `${IMAGE}/move_trash`, need: img('create') },
  connection: { method: 'GET', path: `${IMAGE}/connection`, need: img('read') },
  createSnapshot: { method: 'POST', path: `${IMAGE}/snap`, need: img('create') },
  editSnapshot: { method: 'PUT', path: SNAP, need: img('update') },
  deleteSnapshot: { method: 'DELETE', path: SNAP, need: img('delete') },
  rollback: { method: 'POST', path: `${SNAP}/rollback`, need: img('update') },
  clone: { method: 'POST', path: `${SNAP}/clone`, need: img('create') },
  listTrash: { method: 'GET', path: '/api/block/image/trash', need: img('read') },
  purgeTrash: { method: 'POST', path: '/api/block/image/trash/purge', need: img('delete') },
  restoreTrash: { method: 'POST', path: '/api/block/image/trash/{image_id_spec}/restore', need: img('create') },
  removeTrash: { method: 'DELETE', path: '/api/block/image/trash/{image_id_spec}', need: img('delete') },
  listPurgeSchedules: { method: 'GET', path: '/api/block/image/trash/purge-schedule', need: img('read') },
  addPurgeSchedule: { method: 'POST', path: '/api/block/image/trash/purge-schedule', need: img('delete') },
  removePurgeSchedule: { method: 'DELETE', path: '/api/block/image/trash/purge-schedule', need: img('delete') },
  purgeScheduleStatus: { method: 'GET', path: '/api/block/image/trash/purge-schedule/status', need: img('read') },
  perfImage: { method: 'GET', path: '/api/perf/image/{image_spec}', need: img('read') },
  perfOverall: { method: 'GET', path: '/api/perf/overall', need: img('read') },
  perfTop: { method: 'GET', path: '/api/perf/top', need: img('read') },
  listUsers: { method: 'GET', path: '/api/user', need: { scope: 'user', permission: 'read' } },
  createUser: { method: 'POST', path: '/api/user', need: { scope: 'user', permission: 'create' } },
  updateUser: { method: 'PUT', path: '/api/user/{username}', need: { scope: 'user', permission: 'update' } },
  deleteUser: { method: 'DELETE', path: '/api/user/{username}', need: { scope: 'user', permission: 'delete' } },
  listRoles: { method: 'GET', path: '/api/role', need: { scope: 'user', permission: 'read' } },
  createRole: { method: 'POST', path: '/api/role', need: { scope: 'user', permission: 'create' } },
  updateRole: { method: 'PUT', path: '/api/role/{name}', need: { scope: 'user', permission: 'update' } },
  deleteRole: { method: 'DELETE', path: '/api/role/{name}', need: { scope: 'user', permission: 'delete' } },
  audit: { method: 'GET', path: '/api/audit', need: { scope: 'user', permission: 'update' } },
  alerts: { method: 'GET', path: '/api/alerts', need: 'user' },
} as const satisfies Record<string, Endpoint>;

export type EndpointName = keyof typeof EP;
