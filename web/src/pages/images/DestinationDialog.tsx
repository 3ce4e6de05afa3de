// Where a copy or a clone goes: pool, namespace and name of the new image.

import { useState } from 'preact/hooks';
import { Callout } from '../../components/Callout';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { useAction } from '../../components/useAction';
import { imageSpec, nameError } from '../../lib/names';
import type { PoolState } from './BlockImagesPage';
import { NamespaceSelect } from './NamespaceSelect';
import { PoolField } from './PoolField';

export interface Destination {
  pool: string;
  namespace: string;
  name: string;
  spec: string;
}

interface Props {
  title: string;
  source: string;
  defaultName: string;
  pools: PoolState;
  submitLabel: string;
  tip: string;
  hint?: string;
  /** Offers "copy snapshots too" (a deep copy). */
  allowSnapshots?: boolean;
  onSubmit: (dest: Destination, withSnapshots: boolean) => Promise<void>;
  onClose: () => void;
}

export function DestinationDialog(props: Props) {
  const { title, source, defaultName, pools, submitLabel, tip, hint, allowSnapshots, onSubmit, onClose } = props;
  const [pool, setPool] = useState(source.split('/')[0] ?? '');
  const [namespace, setNamespace] = useState('');
  const [name, setName] = useState(defaultName);
  const [withSnapshots, setWithSnapshots] = useState(false);
  const [submitted, setSubmitted] = useState(false);
  const action = useAction();
  const nameProblem = nameError('Image', name);
  const poolProblem = pool === '' ? 'Pool * is required.' : null;
  return (
    <Dialog title={title} onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setSubmitted(true);
          if (nameProblem || poolProblem) return;
          const dest = { pool, namespace, name, spec: imageSpec(pool, namespace || null, name) };
          if (await action.run(() => onSubmit(dest, withSnapshots))) onClose();
        }}
      >
        <div class="dialog-body">
          <p>
            Source: <strong>{source}</strong>
          </p>
          <Field label="Pool" required error={submitted ? (poolProblem ?? undefined) : undefined}>
            {({ id, describedBy, invalid, required }) => (
              <PoolField
                id={id}
                required={required}
                pools={pools}
                value={pool}
                describedBy={describedBy}
                invalid={invalid}
                onChange={(p) => {
                  setPool(p);
                  setNamespace('');
                }}
              />
            )}
          </Field>
          <Field label="Namespace">
            {({ id }) => <NamespaceSelect id={id} pool={pool} value={namespace} onChange={setNamespace} />}
          </Field>
          <Field
            label="Name"
            required
            error={submitted || name !== defaultName ? (nameProblem ?? undefined) : undefined}
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
          {allowSnapshots && (
            <label class="check">
              <input
                type="checkbox"
                checked={withSnapshots}
                onChange={(e) => setWithSnapshots(e.currentTarget.checked)}
              />
              Copy its snapshots too (deep copy)
            </label>
          )}
          <Callout kind="tip">{tip}</Callout>
          <ErrorText error={action.error} hint={hint} />
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            {submitLabel}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
