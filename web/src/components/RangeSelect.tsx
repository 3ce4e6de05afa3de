// The performance tabs' time range selector: a labelled group of radio buttons (arrow keys move between them),
// shown as a row of segmented buttons.

import { useId } from 'preact/hooks';
import { PERF_RANGES, type PerfRange } from '../lib/perf';

interface Props {
  value: PerfRange;
  onChange: (range: PerfRange) => void;
}

export function RangeSelect({ value, onChange }: Props) {
  const name = useId();
  return (
    <fieldset class="range-select">
      <legend>Time range</legend>
      {PERF_RANGES.map((r) => (
        <label key={r.id} class={r.id === value.id ? 'range-option range-chosen' : 'range-option'}>
          <input type="radio" name={name} value={r.id} checked={r.id === value.id} onChange={() => onChange(r)} />
          <span>{r.label}</span>
        </label>
      ))}
    </fieldset>
  );
}
