// Unit tests of the Create RBD Image form's validation and the request body it builds.
import { describe, expect, it } from 'vitest';
import { DEFAULT_FEATURES, type FeatureName } from './features';
import { createBody, validateImageForm, type ImageFormValues } from './imageForm';

const MiB = 2 ** 20;
const base: ImageFormValues = {
  name: 'vm1',
  pool: 'rbd',
  namespace: '',
  size: '10',
  sizeUnit: 'GiB',
  features: new Set<FeatureName>(DEFAULT_FEATURES),
  objSize: 4 * MiB,
  stripeUnit: 4 * MiB,
  stripeCount: '1',
};

describe('validateImageForm', () => {
  it('accepts the defaults', () => {
    expect(validateImageForm(base)).toEqual({});
  });
  it('requires Name * and Pool *', () => {
    const errors = validateImageForm({ ...base, name: '', pool: '' });
    expect(errors.name).toBe('Name * is required.');
    expect(errors.pool).toBe('Pool * is required.');
  });
  it('checks name rules and sizes', () => {
    expect(validateImageForm({ ...base, name: 'a@b' }).name).toBe("'/' and '@' are not allowed.");
    expect(validateImageForm({ ...base, size: '0' }).size).toBe('Size must be larger than 0.');
    expect(validateImageForm({ ...base, size: '' }).size).toBe('Size is required.');
  });
  it('checks the striping layout only when striping is chosen', () => {
    const striped = { ...base, features: new Set<FeatureName>([...DEFAULT_FEATURES, 'striping']) };
    expect(validateImageForm({ ...base, stripeCount: 'x' })).toEqual({});
    expect(validateImageForm({ ...striped, stripeUnit: 8 * MiB }).stripeUnit).toContain(
      'must not exceed the object size',
    );
    expect(validateImageForm({ ...striped, stripeCount: '0' }).stripeCount).toContain('at least 1');
    expect(validateImageForm({ ...striped, stripeCount: '5000' }).stripeCount).toContain('at most 4096');
    expect(validateImageForm(striped).stripeUnit).toContain('smaller than the object size');
    expect(validateImageForm({ ...striped, stripeUnit: MiB, stripeCount: '4' })).toEqual({});
    expect(
      validateImageForm({ ...striped, size: '16', sizeUnit: 'MiB', stripeCount: '4', stripeUnit: MiB }).size,
    ).toContain('must exceed stripe count × object size (16 MiB)');
  });
});

describe('createBody', () => {
  it('sends bytes, the object size and the features without striping', () => {
    expect(createBody(base)).toEqual({
      name: 'vm1',
      pool_name: 'rbd',
      size: 10 * 2 ** 30,
      obj_size: 4 * MiB,
      features: ['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten'],
    });
  });
  it('adds the namespace and the layout when given', () => {
    const body = createBody({
      ...base,
      namespace: 'tenant-a',
      features: new Set<FeatureName>(['layering', 'striping']),
      stripeUnit: MiB,
      stripeCount: '4',
    });
    expect(body).toMatchObject({ namespace: 'tenant-a', stripe_unit: MiB, stripe_count: 4, features: ['layering'] });
  });
});
