// A running task's progress as the image row shows it: what it does, the percent done, and an estimate of the time
// left from the rate so far (none until there is a rate to go by).

import type { Task } from '../api/types';

const VERBS: Record<string, string> = {
  'rbd/flatten': 'Flattening',
  'rbd/copy': 'Copying',
  'rbd/deep_copy': 'Deep copying',
  'rbd/delete': 'Deleting',
  'rbd/snap/rollback': 'Rolling back',
  'rbd/snap/purge': 'Purging snapshots',
  'rbd/trash/remove': 'Removing',
};

/** What a task does, as a row says it: `Flattening`. */
export function taskVerb(name: string): string {
  return VERBS[name] ?? name;
}

/** `45 s`, `3 min`, `1 h 20 min`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 === 0 ? `${h} h` : `${h} h ${m % 60} min`;
}

export interface TaskProgress {
  verb: string;
  percent: number;
  /** Seconds left, estimated from the rate so far; null before there is progress to go by. */
  etaSeconds: number | null;
  /** `Flattening 42% · about 1 min left`. */
  text: string;
}

/** The progress of a running task at `nowMs`. */
export function taskProgress(task: Task, nowMs: number): TaskProgress {
  const percent = Math.min(100, Math.max(0, Math.round(task.progress)));
  const began = Date.parse(task.begin_time);
  const elapsed = (nowMs - began) / 1000;
  const etaSeconds =
    Number.isFinite(elapsed) && elapsed > 0 && percent > 0 && percent < 100
      ? (elapsed * (100 - percent)) / percent
      : null;
  const verb = taskVerb(task.name);
  const eta = etaSeconds === null ? 'estimating time left' : `about ${formatDuration(etaSeconds)} left`;
  return { verb, percent, etaSeconds, text: `${verb} ${percent}% · ${eta}` };
}
