// Unit tests of the QoS form values: the 12 options, byte-rate units and whole-number checks.
import { describe, expect, it } from 'vitest';
import { QOS_OPTIONS, qosField, qosValue } from './qos';

const iops = QOS_OPTIONS.find((o) => o.name === 'rbd_qos_iops_limit');
const bps = QOS_OPTIONS.find((o) => o.name === 'rbd_qos_write_bps_burst');

describe('QoS options', () => {
  it('lists the reference twelve', () => {
    expect(QOS_OPTIONS).toHaveLength(12);
    expect(iops?.kind).toBe('iops');
    expect(bps?.label).toBe('Write BPS burst');
  });
  it('reads and writes byte rates with units', () => {
    if (!bps || !iops) throw new Error('options missing');
    expect(qosField(bps, String(10 * 2 ** 20))).toEqual({ value: '10', unit: 'MiB' });
    expect(qosField(bps, '0')).toEqual({ value: '0', unit: 'B' });
    expect(qosValue(bps, { value: '1.5', unit: 'KiB' })).toEqual({ ok: true, value: 1536 });
    expect(qosValue(iops, { value: '500', unit: 'B' })).toEqual({ ok: true, value: 500 });
    expect(qosValue(iops, { value: '1.5', unit: 'B' }).ok).toBe(false);
    expect(qosValue(iops, { value: '', unit: 'B' }).ok).toBe(false);
  });
});
