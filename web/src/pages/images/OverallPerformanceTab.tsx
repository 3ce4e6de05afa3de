// Block Images › Overall Performance: read/write IOPS, throughput and latency summed over every image for the chosen
// time range, and the busiest images (highest IOPS, throughput and latency) with a way into each one's own charts.

import { api } from '../../api/client';
import type { PerfRanking, TopImage } from '../../api/types';
import { Callout } from '../../components/Callout';
import { ErrorText } from '../../components/ErrorText';
import { RangeSelect } from '../../components/RangeSelect';
import { useLoad } from '../../components/useLoad';
import { usePolling } from '../../components/usePolling';
import { formatValue, type ValueKind } from '../../lib/chart';
import { refreshMs, topWindow } from '../../lib/perf';
import { perfRange } from '../../state/perfRange';
import { useStore } from '../../state/store';
import { drillInto } from './drill';
import { PerfCharts, type LoadedHistory } from './PerfCharts';

const TOP_LIMIT = 5;

interface Ranking {
  by: PerfRanking;
  title: string;
  kind: ValueKind;
  read: (r: TopImage) => number | null;
  write: (r: TopImage) => number | null;
  total: ((r: TopImage) => number) | null;
}

const RANKINGS: Ranking[] = [
  {
    by: 'iops',
    title: 'Highest IOPS',
    kind: 'iops',
    read: (r) => r.read_iops,
    write: (r) => r.write_iops,
    total: (r) => r.read_iops + r.write_iops,
  },
  {
    by: 'throughput',
    title: 'Highest Throughput',
    kind: 'bps',
    read: (r) => r.read_bps,
    write: (r) => r.write_bps,
    total: (r) => r.read_bps + r.write_bps,
  },
  {
    by: 'latency',
    title: 'Highest Latency',
    kind: 'ms',
    // Latency without operations in that direction is undefined, not 0 ms.
    read: (r) => (r.read_iops > 0 ? r.read_latency_ms : null),
    write: (r) => (r.write_iops > 0 ? r.write_latency_ms : null),
    total: null,
  },
];

function TopTable({ ranking, rows, phrase }: { ranking: Ranking; rows: TopImage[] | undefined; phrase: string }) {
  const cell = (v: number | null) => (v === null ? <span class="muted">–</span> : formatValue(v, ranking.kind));
  const columns = ranking.total ? 4 : 3;
  return (
    <div class="table-wrap">
      <table class="table top-table">
        <caption>{ranking.title}</caption>
        <thead>
          <tr>
            <th scope="col">Image</th>
            <th scope="col">Read</th>
            <th scope="col">Write</th>
            {ranking.total && <th scope="col">Total</th>}
          </tr>
        </thead>
        <tbody>
          {rows === undefined && (
            <tr>
              <td colSpan={columns} class="empty">
                Loading…
              </td>
            </tr>
          )}
          {rows?.length === 0 && (
            <tr>
              <td colSpan={columns} class="empty">
                No I/O in {phrase}.
              </td>
            </tr>
          )}
          {rows?.map((r) => (
            <tr key={r.image}>
              <th scope="row" class="name-cell">
                <button
                  type="button"
                  class="link-button"
                  aria-label={`Performance of ${r.image}`}
                  onClick={() => drillInto(r.image)}
                >
                  {r.image}
                </button>
              </th>
              <td>{cell(ranking.read(r))}</td>
              <td>{cell(ranking.write(r))}</td>
              {ranking.total && <td>{cell(ranking.total(r))}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function OverallPerformanceTab() {
  const range = useStore(perfRange);
  const ranked = topWindow(range);
  const overall = useLoad<LoadedHistory>(
    async () => ({ range, history: await api.perfOverall(range.seconds), at: Date.now() }),
    [range],
  );
  const top = useLoad(
    async () => Promise.all(RANKINGS.map((r) => api.perfTop(r.by, ranked.seconds, TOP_LIMIT))),
    [ranked.seconds],
  );
  usePolling(overall.reload, refreshMs(range));
  usePolling(top.reload, refreshMs(range));
  return (
    <section class="perf tab-content" aria-labelledby="overall-perf-title">
      <h2 id="overall-perf-title" class="sr-only">
        Overall Performance
      </h2>
      <Callout kind="tip">
        Use overall charts first, then drill into per-image performance to locate the exact source of load: pick an
        image in the tables below, or expand a row in the Images tab and open its Performance tab.
      </Callout>
      <div class="perf-head">
        <RangeSelect value={range} onChange={(r) => perfRange.set(r)} />
      </div>
      <ErrorText error={overall.error} />
      <PerfCharts data={overall.data} scope="any image" />
      <h3>
        Top images in {ranked.phrase}
        {ranked.seconds < range.seconds && (
          <span class="muted"> (the ranking covers at most the last hour; the charts above cover {range.phrase})</span>
        )}
      </h3>
      <p class="muted perf-updated">
        Average rates over the window; latency is per operation. Pick an image to see its own charts.
      </p>
      <ErrorText error={top.error} />
      <div class="top-grid">
        {RANKINGS.map((r, i) => (
          <TopTable key={r.by} ranking={r} rows={top.data?.[i]} phrase={ranked.phrase} />
        ))}
      </div>
    </section>
  );
}
