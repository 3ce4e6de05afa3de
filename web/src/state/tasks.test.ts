// Unit tests of the task list: which tasks count as newly ended between polls, and how a task's subject reads.
import { describe, expect, it } from 'vitest';
import type { Task } from '../api/types';
import { foldTasks, taskSubject } from './tasks';

const task = (id: string, metadata: Record<string, unknown> = {}): Task => ({
  id,
  name: 'rbd/flatten',
  metadata,
  begin_time: '2026-11-25T14:20:17Z',
  end_time: '2026-11-25T14:20:19Z',
  progress: 100,
  success: true,
  exception: null,
});

describe('foldTasks', () => {
  it('announces nothing on the first poll, then only tasks that were not finished before', () => {
    const first = foldTasks(null, [task('a')]);
    expect(first.ended).toEqual([]);
    const second = foldTasks(first.known, [task('a'), task('b')]);
    expect(second.ended.map((t) => t.id)).toEqual(['b']);
    expect(foldTasks(second.known, [task('a'), task('b')]).ended).toEqual([]);
  });
});

describe('taskSubject', () => {
  it('names the image, snapshot or destination the task works on', () => {
    expect(taskSubject(task('a', { image_spec: 'rbd/vm1' }))).toBe('rbd/vm1');
    expect(taskSubject(task('a', { image_spec: 'rbd/vm1', snapshot_name: 's' }))).toBe('rbd/vm1@s');
    expect(taskSubject(task('a', { image_spec: 'rbd/vm1', dest_image_spec: 'rbd/vm2' }))).toBe('rbd/vm1 → rbd/vm2');
    expect(taskSubject(task('a', { pool_name: null }))).toBe('all pools');
  });
});
