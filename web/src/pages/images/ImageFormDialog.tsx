// The Create RBD Image panel (and Edit): Name *, Pool *, Namespace, Size with units, Features with their rules and
// the seed's guidance, advanced layout; inline validation and the seed's tips and warnings.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import type { EditImageBody, ImageObject } from '../../api/types';
import { Callout } from '../../components/Callout';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { Field } from '../../components/Field';
import { SizeInput } from '../../components/SizeInput';
import { useAction } from '../../components/useAction';
import {
  DEFAULT_FEATURES,
  FEATURES,
  featureLockedReason,
  featuresFromNames,
  featuresToSend,
  toggleFeatureRemembering,
  type FeatureMemory,
  type FeatureName,
} from '../../lib/features';
import { specOf } from '../../lib/imageRules';
import { imageSpec } from '../../lib/names';
import { createBody, validateImageForm, type ImageFormField, type ImageFormValues } from '../../lib/imageForm';
import {
  formatBytes,
  IMAGE_SIZE_UNITS,
  OBJECT_SIZE_DEFAULT,
  OBJECT_SIZES,
  parseSize,
  splitSize,
} from '../../lib/units';
import { notify } from '../../state/notices';
import type { PoolState } from './BlockImagesPage';
import { NamespaceSelect } from './NamespaceSelect';
import { PoolField } from './PoolField';

interface Props {
  /** The image to edit; null to create one. */
  image: ImageObject | null;
  pools: PoolState;
  onClose: () => void;
  onDone: () => void;
  /** Called with the new image's spec after a create (the Images tab then shows how to connect it). */
  onCreated?: (spec: string) => void;
}

// Edit is offered only for an image whose information was read (see `unreadableReason`), so its figures are there;
// the fallbacks below only satisfy the types.
function initialValues(image: ImageObject | null, pools: PoolState): ImageFormValues {
  if (image) {
    const size = splitSize(image.size ?? 0);
    return {
      name: image.name,
      pool: image.pool_name,
      namespace: image.namespace ?? '',
      size: size.value,
      sizeUnit: size.unit,
      features: featuresFromNames(image.features_name),
      objSize: image.obj_size ?? OBJECT_SIZE_DEFAULT,
      stripeUnit: image.stripe_unit ?? OBJECT_SIZE_DEFAULT,
      stripeCount: String(image.stripe_count ?? 1),
    };
  }
  const names = pools.names ?? [];
  return {
    name: '',
    pool: names.includes('rbd') ? 'rbd' : (names[0] ?? ''),
    namespace: '',
    size: '',
    sizeUnit: 'GiB',
    features: new Set<FeatureName>(DEFAULT_FEATURES),
    objSize: OBJECT_SIZE_DEFAULT,
    stripeUnit: OBJECT_SIZE_DEFAULT,
    stripeCount: '1',
  };
}

/** The PUT body: only what changed. */
function editBody(image: ImageObject, v: ImageFormValues, allowShrink: boolean): EditImageBody {
  const body: EditImageBody = {};
  if (v.name !== image.name) body.name = v.name;
  const size = parseSize(v.size, v.sizeUnit);
  if (size.ok && size.bytes !== image.size) {
    body.size = size.bytes;
    if (size.bytes < (image.size ?? 0)) body.allow_shrink = allowShrink;
  }
  const wanted = featuresToSend(v.features);
  const current = featuresToSend(featuresFromNames(image.features_name));
  if (wanted.join() !== current.join()) body.features = wanted;
  return body;
}

export function ImageFormDialog({ image, pools, onClose, onDone, onCreated }: Props) {
  const editing = image !== null;
  const [values, setValues] = useState<ImageFormValues>(() => initialValues(image, pools));
  const [touched, setTouched] = useState<Set<ImageFormField>>(new Set());
  const [submitted, setSubmitted] = useState(false);
  const [allowShrink, setAllowShrink] = useState(false);
  const [memory, setMemory] = useState<FeatureMemory>({});
  const action = useAction();
  const errors = validateImageForm(values);
  const shown = (field: ImageFormField) => (submitted || touched.has(field) ? errors[field] : undefined);
  const touch = (field: ImageFormField) => setTouched(new Set(touched).add(field));
  const set = (patch: Partial<ImageFormValues>) => setValues({ ...values, ...patch });
  const original = image ? featuresFromNames(image.features_name) : new Set<FeatureName>();
  const newSize = parseSize(values.size, values.sizeUnit);
  const shrinking = image?.size != null && newSize.ok && newSize.bytes < image.size;
  const striping = values.features.has('striping');

  const submit = async (e: Event) => {
    e.preventDefault();
    setSubmitted(true);
    if (Object.keys(errors).length > 0) return;
    const ok = await action.run(async () => {
      if (image) await api.editImage(specOf(image), editBody(image, values, allowShrink));
      else await api.createImage(createBody(values));
    });
    if (ok) {
      notify('success', editing ? `Image ${values.name} was updated.` : `Image ${values.name} was created.`);
      onDone();
      if (!editing) onCreated?.(imageSpec(values.pool, values.namespace || null, values.name));
      onClose();
    }
  };

  return (
    <Dialog title={editing ? 'Edit RBD Image' : 'Create RBD Image'} onClose={onClose} wide>
      <form noValidate onSubmit={submit}>
        <div class="dialog-body form-grid">
          <ErrorText error={action.error} />
          <Field label="Name" required error={shown('name')}>
            {({ id, describedBy, invalid, required }) => (
              <input
                id={id}
                value={values.name}
                autoComplete="off"
                aria-required={required}
                aria-describedby={describedBy}
                aria-invalid={invalid}
                onInput={(e) => set({ name: e.currentTarget.value })}
                onBlur={() => touch('name')}
              />
            )}
          </Field>
          {editing ? (
            <p class="field">
              Location: <strong>{values.namespace ? `${values.pool}/${values.namespace}` : values.pool}</strong>{' '}
              <span class="muted">(fixed; use Copy to move it)</span>
            </p>
          ) : (
            <>
              <Field label="Pool" required error={shown('pool')}>
                {({ id, describedBy, invalid, required }) => (
                  <PoolField
                    id={id}
                    required={required}
                    pools={pools}
                    value={values.pool}
                    describedBy={describedBy}
                    invalid={invalid}
                    onChange={(pool) => set({ pool, namespace: '' })}
                    onBlur={() => touch('pool')}
                  />
                )}
              </Field>
              <Field
                label="Namespace"
                help="Optional: images in a namespace are isolated within the pool (pool/namespace/image)."
              >
                {({ id }) => (
                  <NamespaceSelect
                    id={id}
                    pool={values.pool}
                    value={values.namespace}
                    onChange={(namespace) => set({ namespace })}
                  />
                )}
              </Field>
            </>
          )}
          <Field label="Size" required error={shown('size')} help="Virtual capacity presented to the VM or workload.">
            {({ id, describedBy, invalid, required }) => (
              <SizeInput
                id={id}
                required={required}
                value={values.size}
                unit={values.sizeUnit}
                units={IMAGE_SIZE_UNITS}
                describedBy={describedBy}
                invalid={invalid}
                onChange={(size, sizeUnit) => {
                  set({ size, sizeUnit });
                  touch('size');
                }}
              />
            )}
          </Field>
          {shrinking && (
            <label class="check">
              <input type="checkbox" checked={allowShrink} onChange={(e) => setAllowShrink(e.currentTarget.checked)} />
              Allow shrinking: data past {formatBytes(newSize.ok ? newSize.bytes : 0)} is discarded
            </label>
          )}
          <Callout kind="tip">
            Thin provisioning means you can size for growth now and consume physical capacity as data is written.
          </Callout>

          <fieldset class="features">
            <legend>Features</legend>
            {FEATURES.map((f) => {
              const locked = featureLockedReason(f.name, values.features, editing ? 'edit' : 'create', original);
              const helpId = `feature-${f.name}-help`;
              return (
                <div class="feature" key={f.name}>
                  <label class="check">
                    <input
                      type="checkbox"
                      name="features"
                      value={f.name}
                      checked={values.features.has(f.name)}
                      disabled={locked !== null}
                      aria-describedby={helpId}
                      onChange={(e) => {
                        const t = toggleFeatureRemembering(values.features, f.name, e.currentTarget.checked, memory);
                        setMemory(t.memory);
                        set({ features: t.features });
                      }}
                    />
                    <span class="feature-name">{f.name}</span>
                  </label>
                  <span class="feature-help" id={helpId}>
                    {f.enables}. {f.guidance}
                    {locked && <em class="reason"> {locked}</em>}
                  </span>
                </div>
              );
            })}
            {!values.features.has('layering') && (
              <Callout kind="warning">Without layering, snapshots of this image cannot be protected or cloned.</Callout>
            )}
            <Callout kind="tip">
              Features are not one-size-fits-all. If unsure, keep your environment default feature selection and follow
              platform policy for changes.
            </Callout>
          </fieldset>

          {!editing && (
            <details class="advanced" open={striping}>
              <summary>Advanced</summary>
              <Field label="Object size" help="Image data is stored in objects of this size.">
                {({ id, describedBy }) => (
                  <select
                    id={id}
                    aria-describedby={describedBy}
                    value={values.objSize}
                    onChange={(e) => set({ objSize: Number(e.currentTarget.value) })}
                  >
                    {OBJECT_SIZES.map((s) => (
                      <option key={s} value={s}>
                        {formatBytes(s)}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
              <Field
                label="Stripe unit"
                error={shown('stripeUnit')}
                help={striping ? undefined : 'Check the striping feature to set a layout.'}
              >
                {({ id, describedBy, invalid }) => (
                  <select
                    id={id}
                    disabled={!striping}
                    aria-describedby={describedBy}
                    aria-invalid={invalid}
                    value={values.stripeUnit}
                    onChange={(e) => {
                      set({ stripeUnit: Number(e.currentTarget.value) });
                      touch('stripeUnit');
                    }}
                  >
                    {OBJECT_SIZES.map((s) => (
                      <option key={s} value={s}>
                        {formatBytes(s)}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
              <Field label="Stripe count" error={shown('stripeCount')}>
                {({ id, describedBy, invalid }) => (
                  <input
                    id={id}
                    inputMode="numeric"
                    disabled={!striping}
                    aria-describedby={describedBy}
                    aria-invalid={invalid}
                    value={values.stripeCount}
                    onInput={(e) => set({ stripeCount: e.currentTarget.value })}
                    onBlur={() => touch('stripeCount')}
                  />
                )}
              </Field>
            </details>
          )}

          {!editing && (
            <Callout kind="warning">
              Do not choose a non-rbd pool for RBD image workflows. If pool tagging is wrong, image operations and
              integrations can fail.
            </Callout>
          )}
          {!editing && (values.name === '' || values.pool === '') && (
            <Callout kind="warning">
              If required fields (Name * or Pool *) are empty, image creation fails. Complete both required fields
              before submitting.
            </Callout>
          )}
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            {editing ? 'Save' : 'Create Image'}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}
