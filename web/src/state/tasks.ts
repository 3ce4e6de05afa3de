// Background tasks: polls /api/task (fast while something runs), keeps the list the task panel shows, and tells
// listeners when a task ends so the rows it touched refresh by themselves.

import { api, onTaskCall, type TaskNews } from '../api/client';
import type { Task } from '../api/types';
import { notify } from './notices';
import { createStore } from './store';

export interface TaskState {
  executing: Task[];
  /** Tasks that ended while this page was open, newest first. */
  ended: Task[];
}

export const tasks = createStore<TaskState>({ executing: [], ended: [] });

const endListeners = new Set<(task: Task) => void>();

export function onTaskEnded(listener: (task: Task) => void): () => void {
  endListeners.add(listener);
  return () => endListeners.delete(listener);
}

const FAST_MS = 1000;
const SLOW_MS = 5000;

/** A short description of what a task works on, from its metadata. */
export function taskSubject(task: Task): string {
  const m = task.metadata;
  const pick = (key: string) => (typeof m[key] === 'string' ? (m[key] as string) : null);
  const image = pick('image_spec');
  const snap = pick('snapshot_name');
  const dest = pick('dest_image_spec');
  if (image && snap) return `${image}@${snap}`;
  if (image && dest) return `${image} → ${dest}`;
  return image ?? pick('image_id_spec') ?? pick('pool_name') ?? 'all pools';
}

/** Folds one poll's answer into the state; returns the tasks that ended since the previous poll. */
export function foldTasks(known: Set<string> | null, finished: Task[]): { ended: Task[]; known: Set<string> } {
  const ids = new Set(finished.map((t) => t.id));
  const ended = known === null ? [] : finished.filter((t) => !known.has(t.id));
  return { ended, known: ids };
}

let known: Set<string> | null = null;
/** Tasks seen running (answered 202 or listed as executing): only their endings are announced. */
const watched = new Set<string>();
let timer: ReturnType<typeof setTimeout> | undefined;
let running = false;
let fastUntil = 0;

async function poll(): Promise<void> {
  timer = undefined;
  try {
    const list = await api.tasks();
    const folded = foldTasks(known, list.finished_tasks);
    known = folded.known;
    for (const t of list.executing_tasks) watched.add(t.id);
    const state = tasks.get();
    tasks.set({ executing: list.executing_tasks, ended: [...folded.ended.reverse(), ...state.ended].slice(0, 8) });
    for (const task of folded.ended) {
      if (watched.delete(task.id)) announce(task);
      for (const listener of [...endListeners]) listener(task);
    }
  } catch {
    // Logged out or the server is away: the next poll tries again; the pages show their own errors.
  }
  if (!running) return;
  const fast = tasks.get().executing.length > 0 || Date.now() < fastUntil;
  timer = setTimeout(() => void poll(), fast ? FAST_MS : SLOW_MS);
}

function announce(task: Task): void {
  if (task.success) notify('success', `Task ${task.name} on ${taskSubject(task)} finished.`);
  else
    notify('error', `Task ${task.name} on ${taskSubject(task)} failed: ${task.exception?.detail ?? 'no reason given'}`);
}

/** Polls at once after a task call, and fast for a while, so the task list and the rows catch up quickly. */
function kick(task: TaskNews): void {
  if (task) watched.add(task.id);
  fastUntil = Date.now() + 3 * FAST_MS;
  if (timer !== undefined) clearTimeout(timer);
  void poll();
}

let unsubscribe: (() => void) | undefined;

export function startTaskPolling(): void {
  if (running) return;
  running = true;
  unsubscribe = onTaskCall(kick);
  void poll();
}

export function stopTaskPolling(): void {
  running = false;
  unsubscribe?.();
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  known = null;
  watched.clear();
  tasks.set({ executing: [], ended: [] });
}
