// A size: a number and its binary unit, as one labelled group.

import type { SizeUnit } from '../lib/units';

interface Props {
  id: string;
  value: string;
  unit: SizeUnit;
  units: readonly SizeUnit[];
  /** Appended to each unit's name, e.g. "/s" for rates. */
  suffix?: string;
  describedBy: string | undefined;
  invalid: boolean;
  required?: boolean;
  disabled?: boolean;
  onChange: (value: string, unit: SizeUnit) => void;
}

export function SizeInput({
  id,
  value,
  unit,
  units,
  suffix = '',
  describedBy,
  invalid,
  required,
  disabled,
  onChange,
}: Props) {
  return (
    <div class="size-input">
      <input
        id={id}
        aria-required={required}
        inputMode="decimal"
        value={value}
        disabled={disabled}
        aria-describedby={describedBy}
        aria-invalid={invalid}
        onInput={(e) => onChange(e.currentTarget.value, unit)}
      />
      <select
        aria-label="Unit"
        value={unit}
        disabled={disabled}
        onChange={(e) => onChange(value, e.currentTarget.value as SizeUnit)}
      >
        {units.map((u) => (
          <option key={u} value={u}>
            {u}
            {suffix}
          </option>
        ))}
      </select>
    </div>
  );
}
