// The Quality of Service options of the Configuration tab (the reference's 12 rbd_qos_* limits) and their values.

import { parseSize, splitSize, type SizeUnit } from './units';

export type QosKind = 'iops' | 'bps';

export interface QosOption {
  name: string;
  label: string;
  kind: QosKind;
}

const KINDS: { key: string; label: string; kind: QosKind }[] = [
  { key: 'iops', label: 'IOPS', kind: 'iops' },
  { key: 'read_iops', label: 'Read IOPS', kind: 'iops' },
  { key: 'write_iops', label: 'Write IOPS', kind: 'iops' },
  { key: 'bps', label: 'BPS', kind: 'bps' },
  { key: 'read_bps', label: 'Read BPS', kind: 'bps' },
  { key: 'write_bps', label: 'Write BPS', kind: 'bps' },
];

export const QOS_OPTIONS: readonly QosOption[] = KINDS.flatMap(({ key, label, kind }) => [
  { name: `rbd_qos_${key}_limit`, label: `${label} limit`, kind },
  { name: `rbd_qos_${key}_burst`, label: `${label} burst`, kind },
]);

/** Units offered for byte rates. */
export const RATE_UNITS: readonly SizeUnit[] = ['B', 'KiB', 'MiB', 'GiB'];

export interface QosField {
  value: string;
  unit: SizeUnit;
}

/** The form field for a stored value (bytes per second or operations per second). */
export function qosField(option: QosOption, stored: string): QosField {
  const n = Number(stored);
  if (option.kind === 'bps' && Number.isInteger(n) && n > 0) return splitSize(n, RATE_UNITS);
  return { value: stored, unit: 'B' };
}

export type QosValue = { ok: true; value: number } | { ok: false; error: string };

/** The number to store for a field; 0 means unlimited. */
export function qosValue(option: QosOption, field: QosField): QosValue {
  if (option.kind === 'bps') {
    const parsed = parseSize(field.value, field.unit, option.label);
    return parsed.ok ? { ok: true, value: parsed.bytes } : parsed;
  }
  const text = field.value.trim();
  if (!/^\d+$/.test(text)) return { ok: false, error: `${option.label} must be a whole number (0 = unlimited).` };
  return { ok: true, value: Number(text) };
}
