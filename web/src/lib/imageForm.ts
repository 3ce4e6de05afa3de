// The Create/Edit RBD Image form's state, its inline validation (the reference form's rules) and the request it sends.

import { featuresToSend, type FeatureName } from './features';
import { nameError } from './names';
import { formatBytes, parseSize, type SizeUnit } from './units';

export interface ImageFormValues {
  name: string;
  pool: string;
  /** Empty for the default namespace. */
  namespace: string;
  size: string;
  sizeUnit: SizeUnit;
  features: ReadonlySet<FeatureName>;
  objSize: number;
  stripeUnit: number;
  stripeCount: string;
}

export type ImageFormField = 'name' | 'pool' | 'size' | 'stripeUnit' | 'stripeCount';
export type ImageFormErrors = Partial<Record<ImageFormField, string>>;

export const STRIPE_COUNT_MAX = 4096;

/** Checks every field; an empty result means the form can be sent. */
export function validateImageForm(v: ImageFormValues): ImageFormErrors {
  const errors: ImageFormErrors = {};
  const name = nameError('Image', v.name);
  if (name) errors.name = v.name === '' ? 'Name * is required.' : name;
  if (v.pool === '') errors.pool = 'Pool * is required.';
  const size = parseSize(v.size, v.sizeUnit);
  if (!size.ok) errors.size = size.error;
  else if (size.bytes === 0) errors.size = 'Size must be larger than 0.';
  if (v.features.has('striping')) {
    const count = Number(v.stripeCount);
    if (!/^\d+$/.test(v.stripeCount.trim()) || count < 1)
      errors.stripeCount = 'Stripe count must be a whole number of at least 1.';
    else if (count > STRIPE_COUNT_MAX) errors.stripeCount = `Stripe count must be at most ${STRIPE_COUNT_MAX}.`;
    if (v.stripeUnit > v.objSize)
      errors.stripeUnit = `Stripe unit must not exceed the object size (${formatBytes(v.objSize)}).`;
    if (!errors.stripeCount && !errors.stripeUnit && count === 1 && v.stripeUnit === v.objSize) {
      errors.stripeUnit = 'With striping, choose a stripe unit smaller than the object size or a stripe count above 1.';
    }
    if (size.ok && !errors.stripeCount && size.bytes <= count * v.objSize) {
      errors.size = `With striping, the size must exceed stripe count × object size (${formatBytes(count * v.objSize)}).`;
    }
  }
  return errors;
}

export interface CreateImageBody {
  name: string;
  pool_name: string;
  namespace?: string;
  size: number;
  obj_size: number;
  features: string[];
  stripe_unit?: number;
  stripe_count?: number;
}

/** The `POST /api/block/image` body of a valid form. */
export function createBody(v: ImageFormValues): CreateImageBody {
  const size = parseSize(v.size, v.sizeUnit);
  if (!size.ok) throw new Error(size.error);
  const body: CreateImageBody = {
    name: v.name,
    pool_name: v.pool,
    size: size.bytes,
    obj_size: v.objSize,
    features: featuresToSend(v.features),
  };
  if (v.namespace !== '') body.namespace = v.namespace;
  if (v.features.has('striping')) {
    body.stripe_unit = v.stripeUnit;
    body.stripe_count = Number(v.stripeCount);
  }
  return body;
}
