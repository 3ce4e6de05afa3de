// The Trash tab: soft-deleted images with their deletion and expiration times; Restore (optionally under a new
// name), Purge one entry (confirmed, irreversible), Purge expired entries, and the purge schedules.

import { useEffect, useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { PurgeReport, TrashEntry } from '../../api/types';
import { ActionMenu, type MenuAction } from '../../components/ActionMenu';
import { Callout } from '../../components/Callout';
import { ConfirmDialog } from '../../components/ConfirmDialog';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { LoadState } from '../../components/LoadState';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { useLoad } from '../../components/useLoad';
import { nameError } from '../../lib/names';
import { formatTime, isExpired } from '../../lib/time';
import { notify } from '../../state/notices';
import { useSession } from '../../state/session';
import { onTaskEnded } from '../../state/tasks';
import type { PoolState } from './BlockImagesPage';
import { PurgeSchedules } from './PurgeSchedules';

const PURGE_HINT = 'Flatten or delete dependent clones, then purge again.';

function location(e: TrashEntry): string {
  return e.namespace ? `${e.pool_name}/${e.namespace}` : e.pool_name;
}

function idSpec(e: TrashEntry): string {
  return `${location(e)}/${e.id}`;
}

type Open = { kind: 'restore' | 'purge'; entry: TrashEntry } | { kind: 'purge-expired' } | null;

export function TrashTab({ pools }: { pools: PoolState }) {
  const { can } = useSession();
  const trash = useLoad(async () => (await api.trash()).flatMap((g) => g.value), []);
  const [open, setOpen] = useState<Open>(null);
  const close = () => setOpen(null);
  useEffect(() => onTaskEnded(trash.reload), [trash.reload]);
  const now = new Date();

  const actionsFor = (entry: TrashEntry): MenuAction[] => {
    const list: MenuAction[] = [];
    if (can(EP.restoreTrash)) list.push({ label: 'Restore', onSelect: () => setOpen({ kind: 'restore', entry }) });
    if (can(EP.removeTrash))
      list.push({ label: 'Purge', danger: true, onSelect: () => setOpen({ kind: 'purge', entry }) });
    return list;
  };
  const anyActions = can(EP.restoreTrash) || can(EP.removeTrash);
  const entries = trash.data ?? [];

  return (
    <div class="tab-content">
      <p class="muted">
        Images moved to the trash stay there, restorable, until someone purges them or a purge schedule below removes
        them after their expiration time. Nothing is purged automatically otherwise.
      </p>
      <div class="toolbar">
        {can(EP.purgeTrash) && (
          <button
            type="button"
            class="danger"
            disabled={entries.length === 0}
            onClick={() => setOpen({ kind: 'purge-expired' })}
          >
            Purge expired
          </button>
        )}
        <span class="spacer" />
        <button type="button" onClick={trash.reload}>
          ⟳ Refresh
        </button>
      </div>
      <LoadState what="trash entries" loaded={trash} loadingInTable />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Trash</caption>
          <thead>
            <tr>
              <th scope="col">Image</th>
              <th scope="col">Pool</th>
              <th scope="col">Status</th>
              <th scope="col">Deletion Time</th>
              <th scope="col">Expiration Time</th>
              {anyActions && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {trash.data === undefined && (
              <tr>
                <td colSpan={6} class="empty loading-row" aria-busy="true">
                  {trash.error ? 'The trash could not be loaded.' : 'Loading the trash…'}
                </td>
              </tr>
            )}
            {trash.data?.length === 0 && (
              <tr>
                <td colSpan={6} class="empty">
                  The trash is empty.
                </td>
              </tr>
            )}
            {entries.map((e) => (
              <tr key={idSpec(e)}>
                <th scope="row" title={`Image ID ${e.id}`}>
                  {e.name}
                </th>
                <td>{location(e)}</td>
                <td>
                  <span class={e.status === 'normal' ? 'badge' : 'badge badge-warn'}>{e.status}</span>{' '}
                  <span class="muted">{isExpired(e.deferment_end_time, now) ? 'expired' : 'protected'}</span>
                </td>
                <td>{formatTime(e.deletion_time)}</td>
                <td>{formatTime(e.deferment_end_time)}</td>
                {anyActions && (
                  <td class="actions-cell">
                    <ActionMenu subject={`trashed image ${e.name}`} actions={actionsFor(e)} />
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Callout kind="info">
        Images with linked clones cannot be purged until all clones are flattened or deleted.
      </Callout>
      {can(EP.listPurgeSchedules) && <PurgeSchedules pools={pools} />}
      {open?.kind === 'restore' && <RestoreDialog entry={open.entry} onClose={close} onDone={trash.reload} />}
      {open?.kind === 'purge' && (
        <ConfirmDialog
          title="Purge from trash"
          confirmLabel="Purge"
          warnings={[
            'Purge is irreversible. There is no recovery after purge completes.',
            ...(isExpired(open.entry.deferment_end_time, new Date())
              ? []
              : [`Its protection lasts until ${formatTime(open.entry.deferment_end_time)}: purging now overrides it.`]),
          ]}
          hint={PURGE_HINT}
          onConfirm={async () => {
            const result = await api.removeTrash(idSpec(open.entry), true);
            notify(
              result.done ? 'success' : 'info',
              result.done
                ? `Image ${open.entry.name} was purged.`
                : `Purging ${open.entry.name} runs in the background.`,
            );
            trash.reload();
          }}
          onClose={close}
        >
          <p>
            This permanently removes image <strong>{open.entry.name}</strong> ({open.entry.id}) from pool{' '}
            <strong>{location(open.entry)}</strong>.
          </p>
        </ConfirmDialog>
      )}
      {open?.kind === 'purge-expired' && (
        <ConfirmDialog
          title="Purge expired images"
          confirmLabel="Purge expired"
          warnings={['Purge is irreversible. There is no recovery after purge completes.']}
          onConfirm={async () => {
            const result = await api.purgeTrash();
            if (result.done) reportPurge(result.value);
            else notify('info', 'Purging expired images runs in the background.');
            trash.reload();
          }}
          onClose={close}
        >
          <p>
            This permanently removes every trashed image whose expiration time has passed, in all rbd pools. Protected
            ones stay.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

function reportPurge(report: PurgeReport | undefined): void {
  if (!report) return;
  notify('success', `Purged ${report.removed.length} expired image(s).`);
  for (const s of report.skipped) notify('error', `Image ${s.id} was not purged: ${s.detail} (${s.code})`, PURGE_HINT);
}

function RestoreDialog({ entry, onClose, onDone }: { entry: TrashEntry; onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState(entry.name);
  const action = useAction();
  const problem = nameError('Image', name);
  return (
    <Dialog title="Restore image" onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          if (problem) return;
          if (await action.run(() => api.restoreTrash(idSpec(entry), name === entry.name ? '' : name))) {
            notify('success', `Image ${name} was restored to ${location(entry)}.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <p>
            Restores <strong>{entry.name}</strong> ({entry.id}) to the Images of <strong>{location(entry)}</strong>.
          </p>
          <Field
            label="New image name"
            required
            error={problem ?? undefined}
            help="Keep the old name, or choose another if that name is taken now."
          >
            {({ id, describedBy, invalid, required }) => (
              <input
                id={id}
                aria-required={required}
                value={name}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setName(e.currentTarget.value)}
              />
            )}
          </Field>
          <ErrorText
            error={action.error}
            hint="If restore is not available, the retention expired or the purge completed: recreate the image from backup/template."
          />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy || problem !== null}>
            Restore
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
