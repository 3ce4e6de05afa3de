// When image and snapshot actions are unavailable, and why: the reasons the row menus show beside disabled actions.

import type { ImageObject, Snapshot, Task } from '../api/types';
import { imageSpec } from './names';
import { plural, verb } from './plural';

export function specOf(image: Pick<ImageObject, 'pool_name' | 'namespace' | 'name'>): string {
  return imageSpec(image.pool_name, image.namespace, image.name);
}

/** A task still running on this image (flatten, copy, rollback, delete ...), if any. */
export function runningTaskOn(image: ImageObject, executing: readonly Task[]): Task | undefined {
  const spec = specOf(image);
  return executing.find((t) => t.metadata.image_spec === spec);
}

/** Why nothing but removal can be done to an image whose metadata cannot be read (its size is then unknown). */
export function unreadableReason(image: ImageObject): string | null {
  return image.size === null ? 'Its information cannot be read (see its status): run basalt fsck.' : null;
}

export function deleteBlockedReason(image: ImageObject, executing: readonly Task[]): string | null {
  const clones = image.snapshots.reduce((n, s) => n + s.children.length, 0);
  if (clones > 0)
    return `${plural(clones, 'clone')} ${verb(clones, 'depends', 'depend')} on its snapshots: flatten or delete them first.`;
  const snapshots = image.snapshot_count ?? 0;
  if (snapshots > 0) return `It has ${plural(snapshots, 'snapshot')}: delete them first.`;
  if (image.watchers.length > 0)
    return `Attached: ${plural(image.watchers.length, 'client')} ${verb(image.watchers.length, 'has', 'have')} it open.`;
  const task = runningTaskOn(image, executing);
  return task ? `Task ${task.name} is running on it.` : null;
}

export function trashBlockedReason(image: ImageObject, executing: readonly Task[]): string | null {
  if (image.watchers.length > 0)
    return `Attached: ${plural(image.watchers.length, 'client')} ${verb(image.watchers.length, 'has', 'have')} it open.`;
  const task = runningTaskOn(image, executing);
  return task ? `Task ${task.name} is running on it.` : null;
}

export function flattenBlockedReason(image: ImageObject, executing: readonly Task[]): string | null {
  const unreadable = unreadableReason(image);
  if (unreadable) return unreadable;
  if (!image.parent) return 'Not a clone: it has no parent.';
  const task = runningTaskOn(image, executing);
  return task ? `Task ${task.name} is running on it.` : null;
}

export function busyReason(image: ImageObject, executing: readonly Task[]): string | null {
  const unreadable = unreadableReason(image);
  if (unreadable) return unreadable;
  const task = runningTaskOn(image, executing);
  return task ? `Task ${task.name} is running on it.` : null;
}

export interface SnapshotReasons {
  protect: string | null;
  /** Why a protected snapshot cannot be unprotected: clones still read from it. */
  unprotect: string | null;
  clone: string | null;
  delete: string | null;
}

export function snapshotReasons(image: ImageObject, snap: Snapshot): SnapshotReasons {
  return {
    protect: image.features_name.includes('layering') ? null : 'Needs the layering feature.',
    unprotect:
      snap.children.length > 0
        ? `Has ${plural(snap.children.length, 'linked clone')}: flatten or delete them, then unprotect.`
        : null,
    clone: snap.is_protected ? null : 'Protect snapshot first, then run clone.',
    delete: snap.is_protected
      ? snap.children.length > 0
        ? `Protected, with ${plural(snap.children.length, 'linked clone')}: flatten or delete them, unprotect, then delete.`
        : 'Protected: unprotect it first.'
      : null,
  };
}
