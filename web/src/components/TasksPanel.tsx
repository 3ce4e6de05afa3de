// The visible list of background tasks: what runs now with its progress, and what ended recently.

import { useStore } from '../state/store';
import { taskSubject, tasks } from '../state/tasks';

export function TasksPanel() {
  const { executing, ended } = useStore(tasks);
  return (
    <section class="tasks-panel" aria-labelledby="tasks-title">
      <h2 id="tasks-title">Background tasks</h2>
      {executing.length === 0 && <p class="muted">No task is running.</p>}
      <ul>
        {executing.map((t) => (
          <li key={t.id} class="task">
            <span class="task-name">{t.name}</span>
            <span class="task-subject">{taskSubject(t)}</span>
            <progress max={100} value={t.progress} aria-label={`${t.name} on ${taskSubject(t)}: ${t.progress}%`} />
          </li>
        ))}
        {ended.slice(0, 3).map((t) => (
          <li key={t.id} class="task task-ended">
            <span class="task-name">{t.name}</span>
            <span class="task-subject">{taskSubject(t)}</span>
            <span class={t.success ? 'ok-text' : 'danger-text'}>{t.success ? 'finished' : 'failed'}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}
