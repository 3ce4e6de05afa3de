// An expanded image row: tabs Details, Snapshots, Configuration and Performance (charts of this image's I/O), on a fresh copy of the image that
// reloads whenever the list does (after actions and when background tasks end).

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import type { ImageObject } from '../../api/types';
import { ErrorText } from '../../components/ErrorText';
import { Tabs } from '../../components/Tabs';
import { useLoad } from '../../components/useLoad';
import { specOf } from '../../lib/imageRules';
import type { PoolState } from './BlockImagesPage';
import { ConfigurationTab } from './ConfigurationTab';
import { DetailsTab } from './DetailsTab';
import { PerformanceTab } from './PerformanceTab';
import { SnapshotsTab } from './SnapshotsTab';

const TABS = [
  { id: 'details', label: 'Details' },
  { id: 'snapshots', label: 'Snapshots' },
  { id: 'configuration', label: 'Configuration' },
  { id: 'performance', label: 'Performance' },
];

interface Props {
  initial: ImageObject;
  /** Changes whenever the list reloads. */
  refresh: number;
  pools: PoolState;
  onChanged: () => void;
  /** The tab to open on (the Overall Performance tab drills into 'performance'). */
  initialTab?: string | undefined;
}

export function ImageExpanded({ initial, refresh, pools, onChanged, initialTab }: Props) {
  const spec = specOf(initial);
  const [tab, setTab] = useState(initialTab ?? 'details');
  const fresh = useLoad(() => api.image(spec), [spec, refresh]);
  const image = fresh.data ?? initial;
  return (
    <div class="expanded">
      <ErrorText error={fresh.error} />
      <Tabs label={`Image ${spec}`} tabs={TABS} selected={tab} onSelect={setTab}>
        {tab === 'details' && <DetailsTab image={image} />}
        {tab === 'snapshots' && <SnapshotsTab image={image} pools={pools} onChanged={onChanged} />}
        {tab === 'configuration' && <ConfigurationTab spec={spec} />}
        {tab === 'performance' && <PerformanceTab spec={spec} />}
      </Tabs>
    </div>
  );
}
