// The Trash tab's purge schedules: which pools and namespaces have their expired images purged on a schedule, when
// the next runs are, and (with the permission) adding or removing a schedule. Without one, nothing is purged unless
// someone purges.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { PurgeSchedule, PurgeScheduleItem } from '../../api/types';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { useLoad } from '../../components/useLoad';
import { describeItem, intervalError, levelLabel, startTimeError } from '../../lib/purgeSchedule';
import { formatTime } from '../../lib/time';
import { notify } from '../../state/notices';
import { useSession } from '../../state/session';
import type { PoolState } from './BlockImagesPage';

export function PurgeSchedules({ pools }: { pools: PoolState }) {
  const { can } = useSession();
  const schedules = useLoad(
    async () => ({ list: await api.purgeSchedules(), status: await api.purgeScheduleStatus() }),
    [],
  );
  const [adding, setAdding] = useState(false);
  const remove = useAction();
  const list = schedules.data?.list ?? [];
  const status = schedules.data?.status ?? [];
  const canChange = can(EP.addPurgeSchedule);

  const removeItem = async (s: PurgeSchedule, item: PurgeScheduleItem) => {
    if (await remove.run(() => api.removePurgeSchedule(s, item))) {
      notify('success', `The purge schedule ${describeItem(item)} of ${levelLabel(s)} was removed.`);
      schedules.reload();
    }
  };

  return (
    <section class="purge-schedules" aria-labelledby="purge-schedules-title">
      <h2 id="purge-schedules-title">Purge schedules</h2>
      <p class="muted">
        A schedule purges the expired images of its pool or namespace at each scheduled time. Images are never purged
        just because their expiration time has passed.
      </p>
      {canChange && (
        <div class="toolbar">
          <button type="button" onClick={() => setAdding(true)}>
            Add schedule
          </button>
        </div>
      )}
      <ErrorText error={schedules.error ?? remove.error} />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Purge schedules</caption>
          <thead>
            <tr>
              <th scope="col">Applies to</th>
              <th scope="col">Schedule</th>
              {canChange && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {list.length === 0 && (
              <tr>
                <td colSpan={3} class="empty">
                  No purge schedule: expired images stay in the trash until someone purges them.
                </td>
              </tr>
            )}
            {list.flatMap((s) =>
              s.schedule.map((item) => (
                <tr key={`${s.level}|${item.interval}|${item.start_time ?? ''}`}>
                  <th scope="row">{levelLabel(s)}</th>
                  <td>{describeItem(item)}</td>
                  {canChange && (
                    <td class="actions-cell">
                      <button
                        type="button"
                        class="danger"
                        disabled={remove.busy}
                        aria-label={`Remove schedule ${describeItem(item)} of ${levelLabel(s)}`}
                        onClick={() => void removeItem(s, item)}
                      >
                        Remove
                      </button>
                    </td>
                  )}
                </tr>
              )),
            )}
          </tbody>
        </table>
      </div>
      {status.length > 0 && (
        <ul class="muted next-purges">
          {status.map((s) => (
            <li key={`${s.pool_name}/${s.namespace}`}>
              Next purge of {s.namespace ? `${s.pool_name}/${s.namespace}` : s.pool_name}: {formatTime(s.schedule_time)}
            </li>
          ))}
        </ul>
      )}
      {adding && <AddScheduleDialog pools={pools} onClose={() => setAdding(false)} onDone={schedules.reload} />}
    </section>
  );
}

function AddScheduleDialog({ pools, onClose, onDone }: { pools: PoolState; onClose: () => void; onDone: () => void }) {
  const names = pools.names ?? [];
  const [pool, setPool] = useState(names[0] ?? 'rbd');
  const [namespace, setNamespace] = useState('');
  const [interval, setInterval] = useState('1d');
  const [start, setStart] = useState('');
  const action = useAction();
  const intervalProblem = intervalError(interval);
  const startProblem = startTimeError(start);
  const problem = intervalProblem ?? startProblem;
  return (
    <Dialog title="Add a purge schedule" onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          if (problem) return;
          const body = {
            pool_name: pool,
            interval: interval.trim(),
            ...(namespace.trim() ? { namespace: namespace.trim() } : {}),
            ...(start.trim() ? { start_time: start.trim() } : {}),
          };
          if (await action.run(async () => void (await api.addPurgeSchedule(body)))) {
            notify(
              'success',
              `Expired images of ${namespace.trim() ? `${pool}/${namespace.trim()}` : pool} will be purged every ${body.interval}.`,
            );
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <p>
            At each scheduled time, the images of the pool (or namespace) whose expiration time has passed are purged.
          </p>
          <Field label="Pool" required>
            {({ id, required }) =>
              names.length > 0 ? (
                <select id={id} aria-required={required} value={pool} onChange={(e) => setPool(e.currentTarget.value)}>
                  {names.map((n) => (
                    <option key={n} value={n}>
                      {n}
                    </option>
                  ))}
                </select>
              ) : (
                <input id={id} aria-required={required} value={pool} onInput={(e) => setPool(e.currentTarget.value)} />
              )
            }
          </Field>
          <Field label="Namespace" help="Optional. Empty: every namespace of the pool that has no schedule of its own.">
            {({ id, describedBy }) => (
              <input
                id={id}
                value={namespace}
                aria-describedby={describedBy}
                onInput={(e) => setNamespace(e.currentTarget.value)}
              />
            )}
          </Field>
          <Field label="Interval" required help="For example 30m, 12h or 1d." error={intervalProblem ?? undefined}>
            {({ id, describedBy, invalid, required }) => (
              <input
                id={id}
                aria-required={required}
                value={interval}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setInterval(e.currentTarget.value)}
              />
            )}
          </Field>
          <Field
            label="Start time (UTC)"
            help="Optional. Runs are aligned to this time of day, e.g. 02:00."
            error={startProblem ?? undefined}
          >
            {({ id, describedBy, invalid }) => (
              <input
                id={id}
                value={start}
                placeholder="HH:MM"
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setStart(e.currentTarget.value)}
              />
            )}
          </Field>
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy || problem !== null}>
            Add schedule
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
