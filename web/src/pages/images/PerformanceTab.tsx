// An expanded image's Performance tab: read/write IOPS, throughput and latency of this image over the chosen time
// range, reloaded every few seconds while the tab is shown.

import { api } from '../../api/client';
import { Callout } from '../../components/Callout';
import { ErrorText } from '../../components/ErrorText';
import { RangeSelect } from '../../components/RangeSelect';
import { useLoad } from '../../components/useLoad';
import { usePolling } from '../../components/usePolling';
import { refreshMs } from '../../lib/perf';
import { perfRange } from '../../state/perfRange';
import { useStore } from '../../state/store';
import { PerfCharts, type LoadedHistory } from './PerfCharts';

export function PerformanceTab({ spec }: { spec: string }) {
  const range = useStore(perfRange);
  const loaded = useLoad<LoadedHistory>(
    async () => ({ range, history: await api.perfImage(spec, range.seconds), at: Date.now() }),
    [spec, range],
  );
  usePolling(loaded.reload, refreshMs(range));
  return (
    <section class="perf" aria-label={`Performance of ${spec}`}>
      <div class="perf-head">
        <RangeSelect value={range} onChange={(r) => perfRange.set(r)} />
      </div>
      <ErrorText error={loaded.error} />
      <PerfCharts data={loaded.data} scope={spec} />
      <Callout kind="tip">Correlate spikes with recent actions (copy/flatten/clone) before escalating.</Callout>
    </section>
  );
}
