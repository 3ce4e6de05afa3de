// The dialogs the Images tab and the Snapshots tab open: create/edit, copy, clone, snapshot, flatten, move to
// trash and delete, each naming its subject and repeating the seed's warnings.

import { api } from '../../api/client';
import type { ImageObject } from '../../api/types';
import { ConfirmDialog } from '../../components/ConfirmDialog';
import { specOf } from '../../lib/imageRules';
import { notify } from '../../state/notices';
import type { PoolState } from './BlockImagesPage';
import { DestinationDialog } from './DestinationDialog';
import { ImageFormDialog } from './ImageFormDialog';
import { MoveToTrashDialog } from './MoveToTrashDialog';
import { SnapshotNameDialog } from './SnapshotNameDialog';

export type ImageDialog =
  | { kind: 'create' }
  | { kind: 'edit' | 'copy' | 'snapshot' | 'flatten' | 'trash' | 'delete'; image: ImageObject }
  | { kind: 'clone'; image: ImageObject; snap: string };

interface Props {
  dialog: ImageDialog;
  pools: PoolState;
  onClose: () => void;
  onDone: () => void;
  /** After Create Image: the new image's spec. */
  onCreated?: (spec: string) => void;
}

/** Reports a call that may have become a background task. */
function reportTask(result: { done: boolean }, done: string, running: string): void {
  notify(result.done ? 'success' : 'info', result.done ? done : running);
}

export function ImageDialogs({ dialog, pools, onClose, onDone, onCreated }: Props) {
  if (dialog.kind === 'create' || dialog.kind === 'edit') {
    return (
      <ImageFormDialog
        image={dialog.kind === 'edit' ? dialog.image : null}
        pools={pools}
        onClose={onClose}
        onDone={onDone}
        {...(onCreated ? { onCreated } : {})}
      />
    );
  }
  const image = dialog.image;
  const spec = specOf(image);
  switch (dialog.kind) {
    case 'copy':
      return (
        <DestinationDialog
          title="Copy RBD Image"
          source={spec}
          defaultName={`${image.name}-copy`}
          pools={pools}
          submitLabel="Copy"
          tip="Use Copy when you need full independence immediately and do not want a parent-child chain."
          allowSnapshots
          onSubmit={async (dest, withSnapshots) => {
            const result = await api.copyImage(
              spec,
              {
                dest_pool_name: dest.pool,
                dest_image_name: dest.name,
                ...(dest.namespace ? { dest_namespace: dest.namespace } : {}),
              },
              withSnapshots,
            );
            reportTask(
              result,
              `Copied ${spec} to ${dest.spec}.`,
              `Copying ${spec} to ${dest.spec} runs in the background.`,
            );
            onDone();
          }}
          onClose={onClose}
        />
      );
    case 'clone':
      return (
        <DestinationDialog
          title="Clone snapshot"
          source={`${spec}@${dialog.snap}`}
          defaultName={`${image.name}-clone`}
          pools={pools}
          submitLabel="Clone"
          tip="A clone shares its parent's data copy-on-write until written; flatten it before cleaning up the parent chain."
          hint="Protect snapshot first, then run clone."
          onSubmit={async (dest) => {
            await api.clone(spec, dialog.snap, {
              child_pool_name: dest.pool,
              child_image_name: dest.name,
              ...(dest.namespace ? { child_namespace: dest.namespace } : {}),
            });
            notify('success', `Cloned ${spec}@${dialog.snap} to ${dest.spec}.`);
            onDone();
          }}
          onClose={onClose}
        />
      );
    case 'snapshot':
      return <SnapshotNameDialog image={image} onClose={onClose} onDone={onDone} />;
    case 'flatten':
      return (
        <ConfirmDialog
          title="Flatten clone"
          confirmLabel="Flatten"
          warnings={['Flatten is data-intensive and can increase pool usage and write load.']}
          onConfirm={async () => {
            const result = await api.flatten(spec);
            reportTask(
              result,
              `${spec} is flattened: it no longer depends on its parent.`,
              `Flattening ${spec} runs in the background.`,
            );
            onDone();
          }}
          onClose={onClose}
        >
          <p>
            Copies the parent's data into <strong>{spec}</strong> so it no longer depends on{' '}
            <strong>
              {image.parent ? `${image.parent.pool_name}/${image.parent.image_name}@${image.parent.snap_name}` : ''}
            </strong>
            .
          </p>
        </ConfirmDialog>
      );
    case 'trash':
      return <MoveToTrashDialog image={image} onClose={onClose} onDone={onDone} />;
    case 'delete':
      return (
        <ConfirmDialog
          title="Delete RBD Image"
          confirmLabel="Delete image"
          warnings={[
            'Delete is irreversible. Use Trash when recovery window is required.',
            'If uncertainty exists about data deletion impact, stop and use snapshot or trash workflow instead of immediate delete/purge.',
          ]}
          hint="Confirm the image is detached and its snapshots are removed (flatten or delete dependent clones first), then retry delete."
          onConfirm={async () => {
            const result = await api.deleteImage(spec);
            reportTask(result, `Image ${spec} was deleted.`, `Deleting ${spec} runs in the background.`);
            onDone();
          }}
          onClose={onClose}
        >
          <p>
            This permanently removes image <strong>{spec}</strong> ({image.id}) and returns its space.
          </p>
        </ConfirmDialog>
      );
  }
}
