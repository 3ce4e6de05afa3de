// Confirmation of a destructive action: names what will be removed, repeats the seed's warning, asks for an explicit
// "Yes, I am sure", and shows the server's refusal (with what to do) instead of closing.

import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { Callout } from './Callout';
import { Dialog } from './Dialog';
import { ErrorText } from './ErrorText';
import { useAction } from './useAction';

interface Props {
  title: string;
  /** What the action removes or changes, named. */
  children: ComponentChildren;
  warnings: string[];
  confirmLabel: string;
  /** Advice shown with a refusal. */
  hint?: string;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}

export function ConfirmDialog({ title, children, warnings, confirmLabel, hint, onConfirm, onClose }: Props) {
  const [sure, setSure] = useState(false);
  const action = useAction();
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        method="dialog"
        onSubmit={async (e) => {
          e.preventDefault();
          if (await action.run(onConfirm)) onClose();
        }}
      >
        <div class="dialog-body">
          <div class="confirm-subject">{children}</div>
          {warnings.map((w) => (
            <Callout kind="warning" key={w}>
              {w}
            </Callout>
          ))}
          <label class="check">
            <input type="checkbox" checked={sure} onChange={(e) => setSure(e.currentTarget.checked)} />
            Yes, I am sure.
          </label>
          <ErrorText error={action.error} hint={hint} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="danger" disabled={!sure || action.busy}>
            {action.busy ? 'Working…' : confirmLabel}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
