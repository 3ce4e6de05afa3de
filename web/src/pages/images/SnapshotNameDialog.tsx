// Creating a snapshot of an image (the name defaults to `<image>_<time>`) and renaming one.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import type { ImageObject } from '../../api/types';
import { Callout } from '../../components/Callout';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { specOf } from '../../lib/imageRules';
import { defaultSnapshotName, nameError } from '../../lib/names';
import { notify } from '../../state/notices';

interface Props {
  image: ImageObject;
  /** The snapshot to rename; absent to create one. */
  rename?: string;
  onClose: () => void;
  onDone: () => void;
}

export function SnapshotNameDialog({ image, rename, onClose, onDone }: Props) {
  const spec = specOf(image);
  const [name, setName] = useState(rename ?? defaultSnapshotName(image.name, new Date()));
  const action = useAction();
  const problem = nameError('Snapshot', name);
  return (
    <Dialog title={rename ? 'Rename snapshot' : 'Create Snapshot'} onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          if (problem) return;
          const ok = await action.run(async () => {
            if (rename) await api.editSnapshot(spec, rename, { new_snap_name: name });
            else await api.createSnapshot(spec, name);
          });
          if (ok) {
            notify('success', rename ? `Snapshot ${rename} is now ${name}.` : `Snapshot ${spec}@${name} was created.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <p>
            {rename ? 'Snapshot' : 'Image'}: <strong>{rename ? `${spec}@${rename}` : spec}</strong>
          </p>
          <Field label="Name" required error={problem ?? undefined}>
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
          {!rename && (
            <Callout kind="tip">
              Snapshot before any operation that can change filesystem or application state on this disk.
            </Callout>
          )}
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy || problem !== null}>
            {rename ? 'Rename' : 'Create Snapshot'}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
