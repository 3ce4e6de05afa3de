// Storage > Pools: every pool with its application tags, health and usage; create, tag with rbd, delete.

import { useState } from 'preact/hooks';
import { api } from '../api/client';
import { EP } from '../api/endpoints';
import type { Pool } from '../api/types';
import { ActionMenu, type MenuAction } from '../components/ActionMenu';
import { Callout } from '../components/Callout';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { Dialog } from '../components/Dialog';
import { ErrorText } from '../components/ErrorText';
import { Field } from '../components/Field';
import { useAction } from '../components/useAction';
import { useLoad } from '../components/useLoad';
import { nameError } from '../lib/names';
import { formatBytes, parseSize } from '../lib/units';
import { notify } from '../state/notices';
import { useSession } from '../state/session';
import { isRbdPool } from './rbdPools';

type Open = { kind: 'create' } | { kind: 'delete' | 'untag' | 'quota'; pool: Pool } | null;

/** A pool's quotas in words: `4 GiB`, `1000 objects`, both, or none. */
function quotaText(pool: Pool): string {
  const parts = [];
  if (pool.quota_max_bytes > 0) parts.push(formatBytes(pool.quota_max_bytes));
  if (pool.quota_max_objects > 0) parts.push(`${pool.quota_max_objects} objects`);
  return parts.length ? parts.join(', ') : 'none';
}

export function PoolsPage() {
  const { can } = useSession();
  const pools = useLoad(() => api.pools(), []);
  const [open, setOpen] = useState<Open>(null);
  const tagAction = useAction();
  const close = () => setOpen(null);

  const actionsFor = (pool: Pool): MenuAction[] => {
    const list: MenuAction[] = [];
    if (can(EP.updatePool) && !isRbdPool(pool)) {
      list.push({
        label: 'Tag with rbd',
        onSelect: () =>
          void tagAction
            .run(() => api.setPoolApplications(pool.pool_name, [...pool.application_metadata, 'rbd']))
            .then((ok) => {
              if (ok) notify('success', `Pool ${pool.pool_name} is tagged with rbd.`);
              pools.reload();
            }),
      });
    }
    if (can(EP.updatePool) && isRbdPool(pool))
      list.push({ label: 'Remove rbd tag', onSelect: () => setOpen({ kind: 'untag', pool }) });
    if (can(EP.updatePool)) list.push({ label: 'Set quota', onSelect: () => setOpen({ kind: 'quota', pool }) });
    if (can(EP.deletePool))
      list.push({ label: 'Delete', danger: true, onSelect: () => setOpen({ kind: 'delete', pool }) });
    return list;
  };
  const anyActions = can(EP.updatePool) || can(EP.deletePool);

  return (
    <section class="page" aria-labelledby="pools-title">
      <p class="breadcrumb">Storage › Pools</p>
      <div class="page-head">
        <h1 id="pools-title">Pools</h1>
        {can(EP.createPool) && (
          <button type="button" class="primary" onClick={() => setOpen({ kind: 'create' })}>
            + Create Pool
          </button>
        )}
      </div>
      <p class="muted">Block images need at least one healthy pool tagged with the rbd application.</p>
      <ErrorText error={pools.error ?? tagAction.error} />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Pools</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Applications</th>
              <th scope="col">Health</th>
              <th scope="col">Images</th>
              <th scope="col">Provisioned</th>
              <th scope="col">Used</th>
              <th scope="col">Quota</th>
              {anyActions && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {pools.data?.length === 0 && (
              <tr>
                <td colSpan={8} class="empty">
                  No pools yet.
                </td>
              </tr>
            )}
            {pools.data?.map((pool) => (
              <tr key={pool.pool_name}>
                <th scope="row">{pool.pool_name}</th>
                <td>
                  {pool.application_metadata.length === 0 ? (
                    <span class="muted">none</span>
                  ) : (
                    pool.application_metadata.map((a) => (
                      <span class="tag" key={a}>
                        {a}
                      </span>
                    ))
                  )}
                </td>
                <td>
                  <span class={pool.health === 'OK' ? 'badge badge-ok' : 'badge badge-warn'}>{pool.health}</span>
                </td>
                <td>{pool.stats.image_count}</td>
                <td>{formatBytes(pool.stats.provisioned_bytes)}</td>
                <td>{formatBytes(pool.stats.used_bytes)}</td>
                <td>
                  {quotaText(pool)}
                  {pool.stats.quota_reached && <span class="badge badge-warn">full</span>}
                </td>
                {anyActions && (
                  <td class="actions-cell">
                    <ActionMenu subject={`pool ${pool.pool_name}`} actions={actionsFor(pool)} />
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {open?.kind === 'create' && <CreatePoolDialog onClose={close} onDone={pools.reload} />}
      {open?.kind === 'quota' && <QuotaDialog pool={open.pool} onClose={close} onDone={pools.reload} />}
      {open?.kind === 'untag' && (
        <ConfirmDialog
          title="Remove the rbd tag"
          confirmLabel="Remove rbd tag"
          warnings={[
            'Do not choose a non-rbd pool for RBD image workflows. If pool tagging is wrong, image operations and integrations can fail.',
          ]}
          onConfirm={async () => {
            await api.setPoolApplications(
              open.pool.pool_name,
              open.pool.application_metadata.filter((a) => a !== 'rbd'),
            );
            pools.reload();
          }}
          onClose={close}
        >
          <p>
            Pool <strong>{open.pool.pool_name}</strong> will no longer be offered for block images; its{' '}
            {open.pool.stats.image_count} image(s) disappear from the Images list until it is tagged again.
          </p>
        </ConfirmDialog>
      )}
      {open?.kind === 'delete' && (
        <ConfirmDialog
          title="Delete pool"
          confirmLabel="Delete pool"
          warnings={[
            'Deleting a pool is irreversible. The server refuses while the pool still holds images, namespaces or trash.',
          ]}
          hint="Delete, move or purge the pool's images, namespaces and trash first, then retry."
          onConfirm={async () => {
            await api.deletePool(open.pool.pool_name);
            notify('success', `Pool ${open.pool.pool_name} was deleted.`);
            pools.reload();
          }}
          onClose={close}
        >
          <p>
            This permanently removes pool <strong>{open.pool.pool_name}</strong>.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}

function CreatePoolDialog({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState('');
  const [rbd, setRbd] = useState(true);
  const [touched, setTouched] = useState(false);
  const action = useAction();
  const error = touched ? (nameError('Pool', name) ?? undefined) : undefined;
  return (
    <Dialog title="Create Pool" onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setTouched(true);
          if (nameError('Pool', name)) return;
          if (await action.run(() => api.createPool(name, rbd ? ['rbd'] : []))) {
            notify('success', `Pool ${name} was created.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <Field label="Name" required error={error}>
            {({ id, describedBy, invalid, required }) => (
              <input
                id={id}
                aria-required={required}
                value={name}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setName(e.currentTarget.value)}
                onBlur={() => setTouched(true)}
              />
            )}
          </Field>
          <label class="check">
            <input type="checkbox" checked={rbd} onChange={(e) => setRbd(e.currentTarget.checked)} />
            Tag with the rbd application (for block images)
          </label>
          {!rbd && <Callout kind="warning">Without the rbd tag the pool cannot hold block images.</Callout>}
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            Create Pool
          </button>
        </footer>
      </form>
    </Dialog>
  );
}

/** Sets a pool's quotas, as `ceph osd pool set-quota`: empty or 0 removes one. */
function QuotaDialog({ pool, onClose, onDone }: { pool: Pool; onClose: () => void; onDone: () => void }) {
  const [bytes, setBytes] = useState(pool.quota_max_bytes ? String(pool.quota_max_bytes / 1024 ** 3) : '');
  const [objects, setObjects] = useState(pool.quota_max_objects ? String(pool.quota_max_objects) : '');
  const action = useAction();
  const size = bytes.trim() === '' ? ({ ok: true, bytes: 0 } as const) : parseSize(bytes, 'GiB', 'Max size');
  const count = objects.trim() === '' ? 0 : /^\d+$/.test(objects.trim()) ? Number(objects.trim()) : NaN;
  return (
    <Dialog title={`Quota of pool ${pool.pool_name}`} onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (!size.ok || Number.isNaN(count)) return;
          const quota = { quota_max_bytes: size.bytes, quota_max_objects: count };
          if (await action.run(() => api.setPoolQuota(pool.pool_name, quota))) {
            notify('success', `The quota of pool ${pool.pool_name} is set.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <Field label="Max size (GiB)" error={size.ok ? undefined : size.error}>
            {({ id, describedBy, invalid }) => (
              <input
                id={id}
                inputMode="decimal"
                placeholder="no quota"
                value={bytes}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setBytes(e.currentTarget.value)}
              />
            )}
          </Field>
          <Field label="Max objects" error={Number.isNaN(count) ? 'Max objects must be a whole number.' : undefined}>
            {({ id, describedBy, invalid }) => (
              <input
                id={id}
                inputMode="numeric"
                placeholder="no quota"
                value={objects}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setObjects(e.currentTarget.value)}
              />
            )}
          </Field>
          <p class="muted">
            Once the pool's data reaches a quota, writes to its images fail (EDQUOT) until data is removed or the quota
            raised. Leave a field empty for no quota.
          </p>
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy || !size.ok || Number.isNaN(count)}>
            Set quota
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
