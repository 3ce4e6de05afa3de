// The Pool * field of image forms: a list of healthy rbd pools, or a text field when the role cannot read pools.

import { Link } from '../../components/Link';
import { ROUTES } from '../../router';
import type { PoolState } from './BlockImagesPage';

interface Props {
  id: string;
  pools: PoolState;
  value: string;
  describedBy: string | undefined;
  invalid: boolean;
  required?: boolean;
  onChange: (pool: string) => void;
  onBlur?: () => void;
}

export function PoolField({ id, pools, value, describedBy, invalid, required, onChange, onBlur }: Props) {
  if (pools.names === null) {
    return (
      <input
        id={id}
        aria-required={required}
        value={value}
        aria-describedby={describedBy}
        aria-invalid={invalid}
        onInput={(e) => onChange(e.currentTarget.value)}
        onBlur={onBlur}
      />
    );
  }
  return (
    <>
      <select
        id={id}
        aria-required={required}
        value={value}
        aria-describedby={describedBy}
        aria-invalid={invalid}
        onChange={(e) => onChange(e.currentTarget.value)}
        onBlur={onBlur}
      >
        <option value="">Select a pool</option>
        {pools.names.map((p) => (
          <option key={p} value={p}>
            {p}
          </option>
        ))}
      </select>
      {pools.ready && pools.names.length === 0 && (
        <p class="field-error">
          No eligible pool: go to <Link href={ROUTES.pools}>Pools</Link> and set a healthy pool's application to rbd.
        </p>
      )}
    </>
  );
}
