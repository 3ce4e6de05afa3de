// The Snapshots tab: every snapshot with size, usage, protection and clones; create, rename, protect, unprotect,
// clone, rollback (with the seed's warning) and delete.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { ImageObject, Snapshot } from '../../api/types';
import { ActionMenu, type MenuAction } from '../../components/ActionMenu';
import { ConfirmDialog } from '../../components/ConfirmDialog';
import { snapshotReasons, specOf } from '../../lib/imageRules';
import { formatTime } from '../../lib/time';
import { formatBytes } from '../../lib/units';
import { notify, notifyError } from '../../state/notices';
import { useSession } from '../../state/session';
import type { PoolState } from './BlockImagesPage';
import { ConnectDialog } from './ConnectPanel';
import { ImageDialogs } from './ImageDialogs';
import { SnapshotNameDialog } from './SnapshotNameDialog';

type Open =
  { kind: 'create' } | { kind: 'rename' | 'clone' | 'rollback' | 'delete' | 'connect'; snap: Snapshot } | null;

interface Props {
  image: ImageObject;
  pools: PoolState;
  onChanged: () => void;
}

export function SnapshotsTab({ image, pools, onChanged }: Props) {
  const { can } = useSession();
  const spec = specOf(image);
  const [open, setOpen] = useState<Open>(null);
  const close = () => setOpen(null);

  const setProtected = async (snap: Snapshot, is_protected: boolean) => {
    try {
      await api.editSnapshot(spec, snap.name, { is_protected });
      notify('success', `Snapshot ${spec}@${snap.name} is ${is_protected ? 'protected' : 'unprotected'}.`);
    } catch (e) {
      notifyError(e, is_protected ? undefined : 'Flatten or delete dependent clones, then unprotect again.');
    }
    onChanged();
  };

  const actionsFor = (snap: Snapshot): MenuAction[] => {
    const why = snapshotReasons(image, snap);
    const all: (MenuAction & { allowed: boolean })[] = [
      { label: 'Rename', onSelect: () => setOpen({ kind: 'rename', snap }), allowed: can(EP.editSnapshot) },
      snap.is_protected
        ? {
            label: 'Unprotect',
            onSelect: () => void setProtected(snap, false),
            disabledReason: why.unprotect,
            allowed: can(EP.editSnapshot),
          }
        : {
            label: 'Protect',
            onSelect: () => void setProtected(snap, true),
            disabledReason: why.protect,
            allowed: can(EP.editSnapshot),
          },
      {
        label: 'Clone',
        onSelect: () => setOpen({ kind: 'clone', snap }),
        disabledReason: why.clone,
        allowed: can(EP.clone),
      },
      { label: 'Rollback', onSelect: () => setOpen({ kind: 'rollback', snap }), allowed: can(EP.rollback) },
      {
        label: 'Delete',
        danger: true,
        onSelect: () => setOpen({ kind: 'delete', snap }),
        disabledReason: why.delete,
        allowed: can(EP.deleteSnapshot),
      },
    ];
    return all.filter((a) => a.allowed);
  };
  const anyActions = [EP.editSnapshot, EP.clone, EP.rollback, EP.deleteSnapshot, EP.connection].some(can);

  return (
    <div>
      <div class="toolbar">
        {can(EP.createSnapshot) && (
          <button type="button" class="primary" onClick={() => setOpen({ kind: 'create' })}>
            Create Snapshot
          </button>
        )}
        <span class="muted">
          Typical workflow: create snapshot, protect it, clone it if needed; roll back only when required and
          controlled.
        </span>
      </div>
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Snapshots of {spec}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Used</th>
              <th scope="col">State</th>
              <th scope="col">Created</th>
              <th scope="col">Clones</th>
              {anyActions && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {image.snapshots.length === 0 && (
              <tr>
                <td colSpan={7} class="empty">
                  No snapshots.
                </td>
              </tr>
            )}
            {image.snapshots.map((snap) => (
              <tr key={snap.id}>
                <th scope="row">{snap.name}</th>
                <td>{formatBytes(snap.size)}</td>
                <td>{snap.used_bytes === null ? 'n/a' : formatBytes(snap.used_bytes)}</td>
                <td>
                  <span class={snap.is_protected ? 'badge badge-info' : 'badge'}>
                    {snap.is_protected ? 'PROTECTED' : 'UNPROTECTED'}
                  </span>
                </td>
                <td>{formatTime(snap.timestamp)}</td>
                <td>
                  {snap.children.length === 0 ? (
                    <span class="muted">none</span>
                  ) : (
                    snap.children
                      .map((c) => `${c.pool_name}/${c.namespace ? `${c.namespace}/` : ''}${c.image_name}`)
                      .join(', ')
                  )}
                </td>
                {anyActions && (
                  <td class="actions-cell">
                    <span class="row-actions">
                      {can(EP.connection) && (
                        <button
                          type="button"
                          class="link-button"
                          aria-label={`Connect snapshot ${snap.name} (read-only)`}
                          onClick={() => setOpen({ kind: 'connect', snap })}
                        >
                          Connect
                        </button>
                      )}
                      {actionsFor(snap).length > 0 && (
                        <ActionMenu subject={`snapshot ${snap.name}`} actions={actionsFor(snap)} />
                      )}
                    </span>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {open?.kind === 'connect' && <ConnectDialog spec={spec} snap={open.snap.name} onClose={close} />}
      {open?.kind === 'create' && <SnapshotNameDialog image={image} onClose={close} onDone={onChanged} />}
      {open?.kind === 'rename' && (
        <SnapshotNameDialog image={image} rename={open.snap.name} onClose={close} onDone={onChanged} />
      )}
      {open?.kind === 'clone' && (
        <ImageDialogs
          dialog={{ kind: 'clone', image, snap: open.snap.name }}
          pools={pools}
          onClose={close}
          onDone={onChanged}
        />
      )}
      {open?.kind === 'rollback' && (
        <ConfirmDialog
          title="Rollback to snapshot"
          confirmLabel="Rollback"
          warnings={[
            'Rollback discards writes made after the snapshot point. Before rollback, stop write activity and ensure the image is detached/unmapped (or VM is powered off) to avoid data inconsistency.',
          ]}
          onConfirm={async () => {
            const result = await api.rollback(spec, open.snap.name);
            notify(
              result.done ? 'success' : 'info',
              result.done
                ? `${spec} was rolled back to ${open.snap.name}.`
                : `Rolling back ${spec} runs in the background.`,
            );
            onChanged();
          }}
          onClose={close}
        >
          <p>
            Image <strong>{spec}</strong> returns to snapshot <strong>{open.snap.name}</strong> taken{' '}
            {formatTime(open.snap.timestamp)}; its size becomes {formatBytes(open.snap.size)}.
          </p>
        </ConfirmDialog>
      )}
      {open?.kind === 'delete' && (
        <ConfirmDialog
          title="Delete snapshot"
          confirmLabel="Delete snapshot"
          warnings={[
            'Deleting a snapshot is irreversible: the restore point is gone.',
            'If uncertainty exists about data deletion impact, stop and use snapshot or trash workflow instead of immediate delete/purge.',
          ]}
          hint="Flatten or delete dependent clones before deleting snapshot."
          onConfirm={async () => {
            await api.deleteSnapshot(spec, open.snap.name);
            notify('success', `Snapshot ${spec}@${open.snap.name} was deleted.`);
            onChanged();
          }}
          onClose={close}
        >
          <p>
            This permanently removes snapshot{' '}
            <strong>
              {spec}@{open.snap.name}
            </strong>
            .
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}
