// The Namespaces tab: namespaces of every rbd pool with their image counts; create; delete (refused while images
// remain, with the reason).

import { plural, verb } from '../../lib/plural';
import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import { ActionMenu } from '../../components/ActionMenu';
import { Callout } from '../../components/Callout';
import { ConfirmDialog } from '../../components/ConfirmDialog';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { useLoad } from '../../components/useLoad';
import { nameError } from '../../lib/names';
import { notify } from '../../state/notices';
import { useSession } from '../../state/session';
import type { PoolState } from './BlockImagesPage';
import { PoolField } from './PoolField';

interface Row {
  pool: string;
  namespace: string;
  images: number;
}

export function NamespacesTab({ pools }: { pools: PoolState }) {
  const { can } = useSession();
  const poolNames = pools.names ?? [];
  const [filter, setFilter] = useState('');
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState<Row | null>(null);
  const shown = filter ? [filter] : poolNames;
  const rows = useLoad(
    async () =>
      (
        await Promise.all(
          shown.map(async (pool) =>
            (await api.namespaces(pool)).map((n) => ({ pool, namespace: n.namespace, images: n.num_images })),
          ),
        )
      ).flat(),
    [shown.join('\n')],
  );

  return (
    <div class="tab-content">
      <p class="muted">
        Namespaces partition images within a pool, isolating tenants or workloads without separate pools.
      </p>
      <div class="toolbar">
        {can(EP.createNamespace) && (
          <div class="create-wrap">
            <button
              type="button"
              class="primary"
              onClick={() => setCreating(true)}
              disabled={poolNames.length === 0}
              aria-describedby={poolNames.length === 0 ? 'ns-create-reason' : undefined}
            >
              + Create Namespace
            </button>
            {pools.names !== null && poolNames.length === 0 && (
              <span id="ns-create-reason" class="reason">
                Disabled: no healthy pool is tagged rbd (see Storage › Pools).
              </span>
            )}
          </div>
        )}
        <span class="spacer" />
        <label class="inline-label">
          Pool
          <select value={filter} onChange={(e) => setFilter(e.currentTarget.value)}>
            <option value="">All rbd pools</option>
            {poolNames.map((p) => (
              <option key={p} value={p}>
                {p}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorText error={rows.error} />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Namespaces</caption>
          <thead>
            <tr>
              <th scope="col">Namespace</th>
              <th scope="col">Pool</th>
              <th scope="col">Total images</th>
              {can(EP.deleteNamespace) && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {rows.data?.length === 0 && (
              <tr>
                <td colSpan={4} class="empty">
                  No namespaces: images are in each pool's default namespace.
                </td>
              </tr>
            )}
            {rows.data?.map((row) => (
              <tr key={`${row.pool}/${row.namespace}`}>
                <th scope="row">{row.namespace}</th>
                <td>{row.pool}</td>
                <td>{row.images}</td>
                {can(EP.deleteNamespace) && (
                  <td class="actions-cell">
                    <ActionMenu
                      subject={`namespace ${row.pool}/${row.namespace}`}
                      actions={[
                        {
                          label: 'Delete',
                          danger: true,
                          onSelect: () => setDeleting(row),
                          disabledReason:
                            row.images > 0
                              ? `${plural(row.images, 'image')} ${verb(row.images, 'remains', 'remain')}: delete or move ${row.images === 1 ? 'it' : 'them'} first.`
                              : null,
                        },
                      ]}
                    />
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Callout kind="tip">
        Use consistent naming for namespaces (for example environment or team based) to simplify operations and support
        handoffs.
      </Callout>
      {creating && (
        <CreateNamespaceDialog
          pools={pools}
          initialPool={filter || (poolNames[0] ?? '')}
          onClose={() => setCreating(false)}
          onDone={rows.reload}
        />
      )}
      {deleting && (
        <ConfirmDialog
          title="Delete namespace"
          confirmLabel="Delete namespace"
          warnings={['Namespace delete fails if any image still exists in that namespace.']}
          hint="All images inside the namespace (including those in its trash) must be deleted first."
          onConfirm={async () => {
            await api.deleteNamespace(deleting.pool, deleting.namespace);
            notify('success', `Namespace ${deleting.pool}/${deleting.namespace} was deleted.`);
            rows.reload();
          }}
          onClose={() => setDeleting(null)}
        >
          <p>
            This removes namespace <strong>{deleting.namespace}</strong> from pool <strong>{deleting.pool}</strong>.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

interface CreateProps {
  pools: PoolState;
  initialPool: string;
  onClose: () => void;
  onDone: () => void;
}

function CreateNamespaceDialog({ pools, initialPool, onClose, onDone }: CreateProps) {
  const [pool, setPool] = useState(initialPool);
  const [name, setName] = useState('');
  const [submitted, setSubmitted] = useState(false);
  const action = useAction();
  const problem = nameError('Namespace', name);
  return (
    <Dialog title="Create Namespace" onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setSubmitted(true);
          if (problem || !pool) return;
          if (await action.run(() => api.createNamespace(pool, name))) {
            notify('success', `Namespace ${pool}/${name} was created.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <Field label="Pool" required error={submitted && !pool ? 'Pool * is required.' : undefined}>
            {({ id, describedBy, invalid, required }) => (
              <PoolField
                id={id}
                required={required}
                pools={pools}
                value={pool}
                describedBy={describedBy}
                invalid={invalid}
                onChange={setPool}
              />
            )}
          </Field>
          <Field label="Name" required error={submitted || name ? (problem ?? undefined) : undefined}>
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
          <p class="muted">Images are then created as pool/namespace/image.</p>
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            Create Namespace
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
