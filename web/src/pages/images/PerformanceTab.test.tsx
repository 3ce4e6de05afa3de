// Component tests of an image's Performance tab against a stubbed API: it asks for the chosen range, shows the honest
// empty state for an idle window, draws the figures once there is I/O (with the text alternatives), and polls while
// shown but stops when unmounted.
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { PerfPoint } from '../../api/types';
import { rangeById } from '../../lib/perf';
import { perfRange } from '../../state/perfRange';
import { PerformanceTab } from './PerformanceTab';

let root: HTMLDivElement;
let answer: PerfPoint[] = [];
let fetchMock: ReturnType<typeof vi.fn>;

const now = () => Math.floor(Date.now() / 1000);
const point = (t: number, bytes = 0): PerfPoint => ({
  t,
  read_iops: 0,
  write_iops: bytes > 0 ? 1 : 0,
  read_bps: 0,
  write_bps: bytes,
  read_latency_ms: 0,
  write_latency_ms: bytes > 0 ? 9.5 : 0,
});

async function settle() {
  // Let the stubbed fetch resolve and Preact re-render.
  for (let i = 0; i < 5; i += 1) await act(async () => await Promise.resolve());
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  perfRange.set(rangeById('5m'));
  fetchMock = vi.fn(
    async (_url: string) =>
      new Response(JSON.stringify({ image: 'rbd/vm1', resolution: 1, points: answer }), { status: 200 }),
  );
  vi.stubGlobal('fetch', fetchMock);
  root = document.createElement('div');
  document.body.append(root);
});

afterEach(() => {
  render(null, root);
  root.remove();
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

const text = () => root.textContent ?? '';

describe('image Performance tab', () => {
  it('says there was no I/O in an idle window instead of drawing made-up figures', async () => {
    answer = [point(now() - 2), point(now() - 1)];
    act(() => render(<PerformanceTab spec="rbd/vm1" />, root));
    await settle();
    expect(fetchMock.mock.calls[0]?.[0]).toBe('/api/perf/image/rbd%2Fvm1?range=300');
    expect(text()).toContain('No I/O in this window.');
    expect(root.querySelectorAll('figure').length).toBe(3);
    expect(root.querySelectorAll('.chart-empty').length).toBe(3);
    expect(root.querySelector('[role="img"]')?.getAttribute('aria-label')).toBe(
      'IOPS over the last 5 minutes: no I/O in this window.',
    );
  });

  it('charts writes with units, a legend and a hidden table of figures', async () => {
    answer = [point(now() - 3), point(now() - 2, 4 * 2 ** 20), point(now() - 1)];
    act(() => render(<PerformanceTab spec="rbd/vm1" />, root));
    await settle();
    expect(text()).not.toContain('No I/O in this window.');
    const throughput = [...root.querySelectorAll('figure')].find((f) =>
      f.querySelector('figcaption')?.textContent?.includes('Throughput'),
    );
    expect(throughput?.querySelector('.chart-legend')?.textContent).toContain('latest 0 B/s · peak 4 MiB/s');
    expect(throughput?.querySelector('.chart-unit')?.textContent).toBe(' (MiB/s)');
    expect(throughput?.querySelector('[role="img"]')?.getAttribute('aria-label')).toMatch(
      /^Throughput over the last 5 minutes: Read: none; Write: peak 4 MiB\/s at \d\d:\d\d:\d\d \w+ \d+ \w+, latest 0 B\/s; Background: none\.$/,
    );
    const rows = [...(throughput?.querySelectorAll('table tbody tr') ?? [])].map((r) => r.textContent);
    expect(rows[1]).toMatch(/^Write0 B\/s4 MiB\/s\d\d:\d\d:\d\d \w+ \d+ \w+$/);
    expect(throughput?.querySelector('.chart-zone')?.textContent).toMatch(/^Local time \(.*UTC[+-]\d\d:\d\d\)$/);
    // Latency only exists where there were operations, and has no background series.
    const latency = [...root.querySelectorAll('figure')].find((f) =>
      f.querySelector('figcaption')?.textContent?.includes('Latency'),
    );
    expect(latency?.querySelector('.chart-legend')?.textContent).toBe('Read no I/OWrite idle now · peak 9.5 ms');
  });

  it('asks again every few seconds with the chosen range, and stops when closed', async () => {
    answer = [];
    act(() => render(<PerformanceTab spec="rbd/vm1" />, root));
    await settle();
    const radio = [...root.querySelectorAll<HTMLInputElement>('input[type="radio"]')].find(
      (r) => r.parentElement?.textContent === '1 h',
    );
    act(() => radio?.click());
    await settle();
    expect(fetchMock.mock.calls.at(-1)?.[0]).toBe('/api/perf/image/rbd%2Fvm1?range=3600');
    const before = fetchMock.mock.calls.length;
    act(() => void vi.advanceTimersByTime(3000));
    await settle();
    expect(fetchMock.mock.calls.length).toBe(before + 1);
    render(null, root);
    act(() => void vi.advanceTimersByTime(30000));
    expect(fetchMock.mock.calls.length).toBe(before + 1);
  });
});
