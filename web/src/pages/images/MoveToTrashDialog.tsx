// Move to Trash: the image can be restored until it is purged; an optional date protects it from purging until then.
// The expiration only allows purging: nothing removes the image when it passes, only a purge or a purge schedule.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import type { ImageObject } from '../../api/types';
import { Callout } from '../../components/Callout';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { specOf } from '../../lib/imageRules';
import { expirationFromInput, toLocalInput } from '../../lib/time';
import { notify } from '../../state/notices';

interface Props {
  image: ImageObject;
  onClose: () => void;
  onDone: () => void;
}

export function MoveToTrashDialog({ image, onClose, onDone }: Props) {
  const spec = specOf(image);
  const [expires, setExpires] = useState('');
  const action = useAction();
  const parsed = expirationFromInput(expires, new Date());
  return (
    <Dialog title="Move an image to trash" onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          if (!parsed.ok) return;
          if (await action.run(async () => void (await api.moveToTrash(spec, parsed.body)))) {
            notify('success', `Image ${spec} was moved to the trash.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body">
          <p>
            Image <strong>{spec}</strong> leaves the Images list and waits in the Trash, where it can be restored until
            someone purges it.
          </p>
          <Field
            label="Protection expires at"
            help="Optional. Until then the image is protected: purging it needs an explicit override. Leave empty to allow purging at any time."
            error={parsed.ok ? undefined : parsed.error}
          >
            {({ id, describedBy, invalid }) => (
              <input
                id={id}
                type="datetime-local"
                min={toLocalInput(new Date())}
                value={expires}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => setExpires(e.currentTarget.value)}
              />
            )}
          </Field>
          {image.snapshots.some((s) => s.children.length > 0) && (
            <Callout kind="info">
              Clones depend on this image's snapshots: it can be trashed, but not purged until they are flattened or
              deleted.
            </Callout>
          )}
          <Callout kind="info">
            The image is not deleted automatically when this time passes (or at once, if you leave it empty). After it,
            the image may be removed by Purge expired or by a purge schedule set up in the Trash tab.
          </Callout>
          <Callout kind="tip">Restore as soon as decision is made. Do not wait near expiration.</Callout>
          <ErrorText error={action.error} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="danger" disabled={action.busy || !parsed.ok}>
            Move to Trash
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
