// Unit tests of the reasons that disable image and snapshot actions.
import { describe, expect, it } from 'vitest';
import type { ImageObject, Snapshot, Task } from '../api/types';
import {
  busyReason,
  deleteBlockedReason,
  flattenBlockedReason,
  snapshotReasons,
  specOf,
  trashBlockedReason,
} from './imageRules';

const snap = (over: Partial<Snapshot> = {}): Snapshot => ({
  id: 1,
  name: 's1',
  size: 1,
  timestamp: '2026-11-25T14:20:17Z',
  is_protected: false,
  children: [],
  used_bytes: 0,
  ...over,
});

const image = (over: Partial<ImageObject> = {}): ImageObject => ({
  id: 'abc',
  name: 'vm1',
  pool_name: 'rbd',
  namespace: null,
  unique_id: 'rbd/abc',
  size: 1,
  obj_size: 4194304,
  num_objs: 1,
  order: 22,
  block_name_prefix: 'rbd_data.abc',
  features: 61,
  features_name: ['layering'],
  stripe_unit: 4194304,
  stripe_count: 1,
  data_pool: null,
  image_format: 2,
  parent: null,
  timestamp: '2026-11-25T14:20:17Z',
  modify_timestamp: '2026-11-25T14:20:17Z',
  status: 'OK',
  snapshot_count: 0,
  snap_limit: null,
  disk_usage: 0,
  total_disk_usage: 0,
  snapshots: [],
  metadata: {},
  watchers: [],
  ...over,
});

const flattenTask: Task = {
  id: 't',
  name: 'rbd/flatten',
  metadata: { image_spec: 'rbd/tenant/vm1' },
  begin_time: '',
  end_time: null,
  progress: 10,
  success: null,
  exception: null,
};

describe('image actions', () => {
  it('offers only removal for an image whose information cannot be read', () => {
    const lost = image({ size: null, num_objs: null, obj_size: null, snapshot_count: null, status: 'degraded' });
    expect(busyReason(lost, [])).toBe('Its information cannot be read (see its status): run basalt fsck.');
    expect(flattenBlockedReason(lost, [])).toBe(busyReason(lost, []));
    expect(deleteBlockedReason(lost, [])).toBeNull();
    expect(trashBlockedReason(lost, [])).toBeNull();
    expect(busyReason(image(), [])).toBeNull();
  });
  it('writes specs with and without a namespace', () => {
    expect(specOf(image())).toBe('rbd/vm1');
    expect(specOf(image({ namespace: 'tenant' }))).toBe('rbd/tenant/vm1');
  });
  it('blocks delete for clones, snapshots, attachments and running tasks', () => {
    expect(deleteBlockedReason(image(), [])).toBeNull();
    expect(deleteBlockedReason(image({ snapshot_count: 2, snapshots: [snap(), snap()] }), [])).toBe(
      'It has 2 snapshots: delete them first.',
    );
    const withClone = image({
      snapshot_count: 1,
      snapshots: [snap({ children: [{ pool_name: 'rbd', namespace: '', image_name: 'c' }] })],
    });
    expect(deleteBlockedReason(withClone, [])).toContain('1 clone depend');
    expect(deleteBlockedReason(image({ watchers: [{ client: 'nbd', since: '', writable: true }] }), [])).toContain(
      'Attached',
    );
    expect(deleteBlockedReason(image({ namespace: 'tenant' }), [flattenTask])).toBe(
      'Task rbd/flatten is running on it.',
    );
    expect(trashBlockedReason(image(), [flattenTask])).toBeNull();
  });
  it('offers flatten only for clones', () => {
    expect(flattenBlockedReason(image(), [])).toBe('Not a clone: it has no parent.');
    const parent = {
      pool_name: 'rbd',
      pool_namespace: '',
      image_name: 'p',
      image_id: 'x',
      snap_name: 's',
      overlap: 1,
      in_trash: false,
    };
    expect(flattenBlockedReason(image({ parent }), [])).toBeNull();
  });
});

describe('snapshot actions', () => {
  it('needs layering to protect and protection to clone', () => {
    expect(snapshotReasons(image({ features_name: [] }), snap()).protect).toBe('Needs the layering feature.');
    expect(snapshotReasons(image(), snap()).clone).toBe('Protect snapshot first, then run clone.');
    expect(snapshotReasons(image(), snap({ is_protected: true })).clone).toBeNull();
  });
  it('refuses to unprotect a snapshot while clones are linked to it', () => {
    expect(snapshotReasons(image(), snap({ is_protected: true })).unprotect).toBeNull();
    const child = { pool_name: 'rbd', namespace: '', image_name: 'c' };
    expect(snapshotReasons(image(), snap({ is_protected: true, children: [child] })).unprotect).toBe(
      'Has 1 linked clone: flatten or delete them, then unprotect.',
    );
    expect(snapshotReasons(image(), snap({ is_protected: true, children: [child, child] })).unprotect).toContain(
      '2 linked clones',
    );
  });
  it('refuses to delete protected snapshots, naming linked clones', () => {
    expect(snapshotReasons(image(), snap()).delete).toBeNull();
    expect(snapshotReasons(image(), snap({ is_protected: true })).delete).toBe('Protected: unprotect it first.');
    const linked = snap({ is_protected: true, children: [{ pool_name: 'rbd', namespace: '', image_name: 'c' }] });
    expect(snapshotReasons(image(), linked).delete).toContain('1 linked clone');
  });
});
