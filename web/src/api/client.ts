// The typed REST client: one function per operation of the endpoint table, bearer-token auth, the server's error
// body turned into ApiError, and background-task answers (202) reported to the task list.

import { session } from '../state/session';
import { EP, type Endpoint } from './endpoints';
import type {
  ApiErrorBody,
  Alert,
  AuditQuery,
  AuditRecord,
  RoleInfo,
  UserBody,
  UserInfo,
  AuthCheck,
  CloneBody,
  ConnectionInfo,
  ConfigEntry,
  CopyImageBody,
  CreateImageBody,
  EditImageBody,
  ImageListQuery,
  ImageObject,
  ImagePerfHistory,
  LoginAnswer,
  MoveTrashBody,
  PurgeSchedule,
  PurgeScheduleBody,
  PurgeScheduleItem,
  NamespaceInfo,
  PerfHistory,
  PerfRanking,
  Pool,
  PurgeReport,
  SnapshotEditBody,
  TaskList,
  TaskStart,
  TopImage,
  ScheduledPurge,
  TrashGroup,
} from './types';

/** A refusal or failure, with the server's own message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(detail);
    this.name = 'ApiError';
  }
}

type Query = Record<string, string | number | boolean | undefined>;

interface CallOptions {
  params?: Record<string, string>;
  query?: Query;
  body?: unknown;
}

/** A task still running after its call answered 202, or null when a task call finished within the wait. */
export type TaskNews = { id: string; name: string } | null;

const taskListeners = new Set<(task: TaskNews) => void>();

/** Called after every call that may run as a background task. */
export function onTaskCall(listener: (task: TaskNews) => void): () => void {
  taskListeners.add(listener);
  return () => taskListeners.delete(listener);
}

export function fillPath(path: string, params: Record<string, string> = {}): string {
  return path.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`missing path parameter ${name} for ${path}`);
    return encodeURIComponent(value);
  });
}

async function send(endpoint: Endpoint, options: CallOptions = {}): Promise<Response> {
  let url = fillPath(endpoint.path, options.params);
  const query = Object.entries(options.query ?? {}).filter(
    (e): e is [string, string | number | boolean] => e[1] !== undefined,
  );
  if (query.length > 0) url += `?${new URLSearchParams(query.map(([k, v]) => [k, String(v)])).toString()}`;
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = session.get()?.token;
  if (token && endpoint.need !== null) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(url, {
      method: endpoint.method,
      headers,
      body: options.body === undefined ? null : JSON.stringify(options.body),
    });
  } catch {
    throw new ApiError(0, 'ENETDOWN', 'The server cannot be reached: check that basalt is running.');
  }
  if (response.ok) return response;
  let body: Partial<ApiErrorBody> = {};
  try {
    body = (await response.json()) as ApiErrorBody;
  } catch {
    // Not the API's error shape (e.g. a proxy's page): fall back to the status text below.
  }
  if (response.status === 401 && endpoint.need !== null) session.set(null);
  throw new ApiError(response.status, String(body.code ?? response.status), body.detail ?? response.statusText);
}

async function json<T>(endpoint: Endpoint, options?: CallOptions): Promise<T> {
  return (await send(endpoint, options)).json() as Promise<T>;
}

async function nothing(endpoint: Endpoint, options?: CallOptions): Promise<void> {
  await send(endpoint, options);
}

/** A call that may run as a background task: finished (with its answer) or still running. */
async function task<T = null>(endpoint: Endpoint, options?: CallOptions): Promise<TaskStart & { value?: T }> {
  const response = await send(endpoint, options);
  if (response.status === 202) {
    const started = (await response.json()) as { id: string; name: string };
    for (const listener of [...taskListeners]) listener(started);
    return { done: false, task: { id: started.id, name: started.name } };
  }
  for (const listener of [...taskListeners]) listener(null);
  const text = await response.text();
  return text ? { done: true, value: JSON.parse(text) as T } : { done: true };
}

const image = (spec: string) => ({ image_spec: spec });
const snap = (spec: string, name: string) => ({ image_spec: spec, snap: name });

export const api = {
  alerts: () => json<Alert[]>(EP.alerts),
  users: () => json<UserInfo[]>(EP.listUsers),
  createUser: (body: UserBody) => nothing(EP.createUser, { body }),
  updateUser: (username: string, body: UserBody) => nothing(EP.updateUser, { params: { username }, body }),
  deleteUser: (username: string) => nothing(EP.deleteUser, { params: { username } }),
  roles: () => json<RoleInfo[]>(EP.listRoles),
  createRole: (role: RoleInfo) => nothing(EP.createRole, { body: role }),
  updateRole: (role: RoleInfo) => nothing(EP.updateRole, { params: { name: role.name }, body: role }),
  deleteRole: (name: string) => nothing(EP.deleteRole, { params: { name } }),
  audit: (q: AuditQuery) =>
    json<{ total: number; items: AuditRecord[] }>(EP.audit, {
      query: {
        username: q.username || undefined,
        search: q.search || undefined,
        result: q.result,
        offset: q.offset,
        limit: q.limit,
      },
    }),
  login: (username: string, password: string) => json<LoginAnswer>(EP.login, { body: { username, password } }),
  logout: () => nothing(EP.logout),
  authCheck: () => json<AuthCheck>(EP.authCheck),
  changePassword: (username: string, oldPassword: string, newPassword: string) =>
    nothing(EP.changePassword, {
      params: { username },
      body: { old_password: oldPassword, new_password: newPassword },
    }),
  tasks: () => json<TaskList>(EP.tasks),

  pools: () => json<Pool[]>(EP.listPools),
  createPool: (pool: string, applications: string[]) =>
    nothing(EP.createPool, { body: { pool, application_metadata: applications } }),
  setPoolApplications: (pool: string, applications: string[]) =>
    nothing(EP.updatePool, { params: { pool }, body: { application_metadata: applications } }),
  setPoolQuota: (pool: string, quota: { quota_max_bytes: number; quota_max_objects: number }) =>
    nothing(EP.updatePool, { params: { pool }, body: quota }),
  deletePool: (pool: string) => nothing(EP.deletePool, { params: { pool } }),

  namespaces: (pool: string) => json<NamespaceInfo[]>(EP.listNamespaces, { params: { pool } }),
  createNamespace: (pool: string, namespace: string) =>
    nothing(EP.createNamespace, { params: { pool }, body: { namespace } }),
  deleteNamespace: (pool: string, namespace: string) => nothing(EP.deleteNamespace, { params: { pool, namespace } }),

  imageConfig: (spec: string) => json<ConfigEntry[]>(EP.imageConfig, { params: image(spec) }),
  setImageConfig: (spec: string, name: string, value: number | null) =>
    json<ConfigEntry[]>(EP.setImageConfig, { params: image(spec), body: { name, value } }),

  async listImages(query: ImageListQuery): Promise<{ items: ImageObject[]; total: number }> {
    const response = await send(EP.listImages, { query: { ...query, search: query.search || undefined } });
    const items = (await response.json()) as ImageObject[];
    return { items, total: Number(response.headers.get('X-Total-Count') ?? items.length) };
  },
  createImage: (body: CreateImageBody) => nothing(EP.createImage, { body }),
  image: (spec: string) => json<ImageObject>(EP.getImage, { params: image(spec) }),
  editImage: (spec: string, body: EditImageBody) => nothing(EP.editImage, { params: image(spec), body }),
  deleteImage: (spec: string) => task(EP.deleteImage, { params: image(spec) }),
  copyImage: (spec: string, body: CopyImageBody, withSnapshots: boolean) =>
    task(withSnapshots ? EP.deepCopyImage : EP.copyImage, { params: image(spec), body }),
  flatten: (spec: string) => task(EP.flatten, { params: image(spec) }),
  moveToTrash: (spec: string, body: MoveTrashBody) => json<{ id: string }>(EP.moveTrash, { params: image(spec), body }),
  connection: (spec: string, snapName?: string) =>
    json<ConnectionInfo>(EP.connection, { params: image(spec), query: { snap: snapName } }),

  createSnapshot: (spec: string, name: string) =>
    nothing(EP.createSnapshot, { params: image(spec), body: { snapshot_name: name } }),
  editSnapshot: (spec: string, name: string, body: SnapshotEditBody) =>
    nothing(EP.editSnapshot, { params: snap(spec, name), body }),
  deleteSnapshot: (spec: string, name: string) => nothing(EP.deleteSnapshot, { params: snap(spec, name) }),
  rollback: (spec: string, name: string) => task(EP.rollback, { params: snap(spec, name) }),
  clone: (spec: string, name: string, body: CloneBody) => nothing(EP.clone, { params: snap(spec, name), body }),

  trash: () => json<TrashGroup[]>(EP.listTrash),
  purgeTrash: () => task<PurgeReport>(EP.purgeTrash),
  restoreTrash: (idSpec: string, newName: string) =>
    nothing(EP.restoreTrash, { params: { image_id_spec: idSpec }, body: newName ? { new_image_name: newName } : {} }),
  removeTrash: (idSpec: string, force: boolean) =>
    task(EP.removeTrash, { params: { image_id_spec: idSpec }, query: { force: force || undefined } }),
  purgeSchedules: () => json<PurgeSchedule[]>(EP.listPurgeSchedules, { query: { recursive: true } }),
  purgeScheduleStatus: () => json<ScheduledPurge[]>(EP.purgeScheduleStatus),
  addPurgeSchedule: (body: PurgeScheduleBody) => json<PurgeSchedule>(EP.addPurgeSchedule, { body }),
  removePurgeSchedule: (level: { pool_name: string | null; namespace: string | null }, item?: PurgeScheduleItem) =>
    nothing(EP.removePurgeSchedule, {
      query: {
        pool_name: level.pool_name ?? undefined,
        namespace: level.namespace ?? undefined,
        interval: item?.interval,
        start_time: item?.start_time ?? undefined,
      },
    }),

  perfImage: (spec: string, range: number) =>
    json<ImagePerfHistory>(EP.perfImage, { params: image(spec), query: { range } }),
  perfOverall: (range: number) => json<PerfHistory>(EP.perfOverall, { query: { range } }),
  perfTop: (by: PerfRanking, window: number, limit = 5) =>
    json<TopImage[]>(EP.perfTop, { query: { by, window, limit } }),
};
