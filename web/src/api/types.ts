// The shapes of the REST API's requests and answers (docs/API.md), as the dashboard uses them.

export type Permission = 'read' | 'create' | 'update' | 'delete';
export type Permissions = Record<string, Permission[]>;

export interface LoginAnswer {
  token: string;
  username: string;
  permissions: Permissions;
}

export interface AuthCheck {
  username: string;
  permissions: Permissions;
}

/** Ceph's error bodies: `code` is an errno as a decimal string ("17"), a name, or (a task's 404) the number 404. */
export interface ApiErrorBody {
  detail: string;
  code: string | number;
  component?: string | null;
  status?: number | string;
}

export interface ParentRef {
  pool_name: string;
  pool_namespace: string;
  image_name: string;
  image_id: string;
  snap_name: string;
  overlap: number;
  in_trash: boolean;
}

export interface SnapshotChild {
  pool_name: string;
  namespace: string;
  image_name: string;
}

export interface Snapshot {
  id: number;
  name: string;
  size: number;
  timestamp: string;
  is_protected: boolean;
  children: SnapshotChild[];
  used_bytes: number | null;
}

export interface Watcher {
  client: string;
  since: string;
  writable: boolean;
}

/**
 * An image as listed. The fields that come from its metadata are null when that cannot be read (a degraded image
 * whose files are lost: `status_detail` says why), as in Ceph's answers for an image that fails to open.
 */
export interface ImageObject {
  id: string;
  name: string;
  pool_name: string;
  /** Null for the default namespace. */
  namespace: string | null;
  unique_id: string;
  size: number | null;
  obj_size: number | null;
  num_objs: number | null;
  order: number | null;
  block_name_prefix: string | null;
  features: number | null;
  features_name: string[];
  stripe_unit: number | null;
  stripe_count: number | null;
  data_pool: string | null;
  image_format: number;
  parent: ParentRef | null;
  timestamp: string | null;
  modify_timestamp: string | null;
  /** OK, degraded or migrating. */
  status: string;
  /** Why the status is not OK (basalt's own key; absent from Ceph's answers). */
  status_detail?: string | null;
  snapshot_count: number | null;
  snap_limit: number | null;
  disk_usage: number | null;
  total_disk_usage: number | null;
  snapshots: Snapshot[];
  metadata: Record<string, string>;
  watchers: Watcher[];
}

export type SortKey = 'name' | 'pool_name' | 'namespace' | 'size';

export interface ImageListQuery {
  offset: number;
  limit: number;
  search: string;
  sort: `${'+' | '-'}${SortKey}`;
}

export interface CreateImageBody {
  name: string;
  pool_name: string;
  namespace?: string;
  size: number;
  obj_size: number;
  features: string[];
  stripe_unit?: number;
  stripe_count?: number;
}

export interface EditImageBody {
  name?: string;
  size?: number;
  allow_shrink?: boolean;
  features?: string[];
}

export interface CopyImageBody {
  dest_pool_name: string;
  dest_namespace?: string;
  dest_image_name: string;
}

export interface CloneBody {
  child_pool_name: string;
  child_namespace?: string;
  child_image_name: string;
}

export interface SnapshotEditBody {
  new_snap_name?: string;
  is_protected?: boolean;
}

export type MoveTrashBody = { expires_at: string } | { delay: number };

export interface TrashEntry {
  id: string;
  name: string;
  pool_name: string;
  /** Empty for the default namespace. */
  namespace: string;
  source: string;
  status: string;
  deletion_time: string;
  deferment_end_time: string;
}

/** One item of a trash purge schedule: every `interval` (`30m`, `12h`, `1d`), aligned to `start_time` (UTC). */
export interface PurgeScheduleItem {
  interval: string;
  start_time: string | null;
}

/** The trash purge schedule of a level: every pool (no pool), a pool, or one of its namespaces. */
export interface PurgeSchedule {
  level: string;
  pool_name: string | null;
  namespace: string | null;
  schedule: PurgeScheduleItem[];
}

export interface ScheduledPurge {
  pool_name: string;
  /** Empty for the default namespace. */
  namespace: string;
  schedule_time: string;
}

export interface PurgeScheduleBody {
  pool_name?: string;
  namespace?: string;
  interval: string;
  start_time?: string;
}

export interface TrashGroup {
  pool_name: string;
  status: number;
  value: TrashEntry[];
}

export interface PurgeReport {
  removed: string[];
  skipped: { id: string; detail: string; code: string }[];
}

export interface NamespaceInfo {
  namespace: string;
  num_images: number;
}

export interface Pool {
  pool_name: string;
  pool: number;
  application_metadata: string[];
  health: string;
  /** As `ceph osd pool set-quota`: 0 is no quota. */
  quota_max_bytes: number;
  quota_max_objects: number;
  stats: {
    image_count: number;
    provisioned_bytes: number;
    used_bytes: number;
    objects: number;
    quota_reached: boolean;
  };
}

export type ConfigSource = 'global' | 'pool' | 'image';

export interface ConfigEntry {
  name: string;
  value: string;
  source: ConfigSource;
}

export interface Task {
  id: string;
  name: string;
  metadata: Record<string, unknown>;
  begin_time: string;
  end_time: string | null;
  progress: number;
  success: boolean | null;
  exception: { detail: string; code: string } | null;
}

export interface TaskList {
  executing_tasks: Task[];
  finished_tasks: Task[];
}

/** What a background-task call answered: finished in time, or still running as a task to poll. */
export type TaskStart = { done: true } | { done: false; task: { id: string; name: string } };

/** One sample of the performance history: rates over its interval (1 s or 60 s) ending or starting at `t`. */
export interface PerfPoint {
  /** Unix seconds. */
  t: number;
  read_iops: number;
  write_iops: number;
  /** Bytes per second. */
  read_bps: number;
  write_bps: number;
  /** Average per operation; 0 when there was no operation. */
  read_latency_ms: number;
  write_latency_ms: number;
  /** Background tasks (flatten, copy, deep copy): bytes per second read and written, operations per second. */
  background_read_bps?: number;
  background_write_bps?: number;
  background_iops?: number;
}

export interface PerfHistory {
  /** Seconds per point: 1 up to an hour, 60 beyond. */
  resolution: number;
  points: PerfPoint[];
}

export interface ImagePerfHistory extends PerfHistory {
  image: string;
}

export type PerfRanking = 'iops' | 'throughput' | 'latency';

/** An image's averages over the ranking window (images without operations in the window are not listed). */
export type TopImage = Omit<PerfPoint, 't'> & { image: string };

/** A user as /api/user shows it. */
export interface UserInfo {
  username: string;
  roles: string[];
  name: string;
  email: string;
  enabled: boolean;
  last_update: string;
}

/** What creating or changing a user sends (only the fields that change). */
export interface UserBody {
  username?: string;
  password?: string;
  roles?: string[];
  name?: string;
  email?: string;
  enabled?: boolean;
}

/** A role: permissions by scope. */
export interface RoleInfo {
  name: string;
  description: string;
  scopes_permissions: Record<string, Permission[]>;
  system?: boolean;
}

/** One audited call. */
export interface AuditRecord {
  time: string;
  username: string;
  method: string;
  path: string;
  target: string;
  status: number;
  result: 'success' | 'failure';
}

export interface AuditQuery {
  username?: string;
  search?: string;
  result?: 'success' | 'failure';
  offset: number;
  limit: number;
}

/** How to attach an image or snapshot over NBD (GET /api/block/image/{spec}/connection). */
export interface ConnectionInfo {
  image_spec: string;
  snapshot: string | null;
  export_name: string;
  size: number;
  read_only: boolean;
  exclusive_lock: boolean;
  nbd: { address: string; host: string; port: number; tls: boolean; client_certificates: boolean; unix_socket: string };
  uris: { tcp: string | null; tls: string | null; unix: string };
  qemu: { drive: string; drive_unix: string; blockdev: string };
  libvirt: { tcp: string; unix: string };
  device_map: { tcp: string; unix: string };
  nbd_client: { tcp: string; unix: string };
  credentials: { tcp: string; unix: string; cert_dir: string; user: string; your_access: 'read-write' | 'read-only' };
  warning: string;
}

/** One alert of `GET /api/alerts`. */
export interface Alert {
  id: string;
  severity: 'warning' | 'critical';
  summary: string;
  detail: string;
  /** Seconds since the epoch when the server first saw it. */
  since: number;
}
