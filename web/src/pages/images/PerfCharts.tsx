// The charts of a performance tab: read/write IOPS, throughput and latency over the chosen range from one history
// answer, with a note when the window saw no I/O and when the figures were last updated.

import type { PerfHistory } from '../../api/types';
import { LineChart } from '../../components/LineChart';
import { formatClock, offsetLabel } from '../../lib/chart';
import {
  hasActivity,
  METRIC_KIND,
  refreshMs,
  seriesOf,
  visibleSpan,
  type Metric,
  type PerfRange,
} from '../../lib/perf';

/** A history with the range it was asked for and when it arrived. */
export interface LoadedHistory {
  range: PerfRange;
  history: PerfHistory;
  /** Unix milliseconds. */
  at: number;
}

export const CHARTS: { metric: Metric; title: string }[] = [
  { metric: 'iops', title: 'IOPS' },
  { metric: 'bps', title: 'Throughput' },
  { metric: 'latency', title: 'Read / Write Latency' },
];

interface Props {
  data: LoadedHistory | undefined;
  /** What the figures cover, for the empty-window note: "rbd/vm1", "any image". */
  scope: string;
}

export function PerfCharts({ data, scope }: Props) {
  if (!data) {
    return (
      <p class="muted" role="status">
        Loading performance figures…
      </p>
    );
  }
  const { range, history, at } = data;
  const span = visibleSpan(history.points, range.seconds, at / 1000);
  return (
    <div class="perf-charts">
      <p class="muted perf-updated">
        {history.resolution === 1 ? 'One point per second' : 'One point per minute'}, updated{' '}
        {formatClock(Math.floor(at / 1000), true)} ({offsetLabel(at / 1000)}), refreshing every{' '}
        {refreshMs(range) / 1000} s while shown.
      </p>
      {!hasActivity(history.points) && (
        <div class="perf-empty" role="status">
          <strong>No I/O in this window.</strong> Nothing read or wrote {scope} in {range.phrase}. Figures come from the
          NBD data path, import/export, and the background tasks (flatten, copy, deep copy): they appear here within
          seconds of a client&apos;s first I/O.
        </div>
      )}
      <div class="chart-grid">
        {CHARTS.map((c) => (
          <LineChart
            key={c.metric}
            title={c.title}
            kind={METRIC_KIND[c.metric]}
            series={seriesOf(history.points, c.metric)}
            from={span.from}
            to={span.to}
            resolution={history.resolution}
            phrase={range.phrase}
            syncKey="perf"
          />
        ))}
      </div>
    </div>
  );
}
