import { describe, expect, it } from 'vitest';
import { humanConfigValue } from './configValue';

describe('humanConfigValue', () => {
  it('shows byte rates and sizes in binary units', () => {
    expect(humanConfigValue('rbd_qos_bps_limit', '20971520')).toBe('20 MiB/s');
    expect(humanConfigValue('rbd_qos_write_bps_burst', '1048576')).toBe('1 MiB/s');
    expect(humanConfigValue('rbd_cache_size', '33554432')).toBe('32 MiB');
  });
  it('leaves counts, small values and words alone', () => {
    expect(humanConfigValue('rbd_qos_iops_limit', '20971520')).toBeNull();
    expect(humanConfigValue('rbd_qos_bps_limit', '0')).toBeNull();
    expect(humanConfigValue('rbd_cache', 'true')).toBeNull();
  });
});
