// An expanded image row: tabs Details, Snapshots, Configuration and Performance, on a fresh copy of the image that
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
import { PerformancePlaceholder } from './PerformancePlaceholder';
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
}

export function ImageExpanded({ initial, refresh, pools, onChanged }: Props) {
  const spec = specOf(initial);
  const [tab, setTab] = useState('details');
  const fresh = useLoad(() => api.image(spec), [spec, refresh]);
  const image = fresh.data ?? initial;
  return (
    <div class="expanded">
      <ErrorText error={fresh.error} />
      <Tabs label={`Image ${spec}`} tabs={TABS} selected={tab} onSelect={setTab}>
        {tab === 'details' && <DetailsTab image={image} />}
        {tab === 'snapshots' && <SnapshotsTab image={image} pools={pools} onChanged={onChanged} />}
        {tab === 'configuration' && <ConfigurationTab spec={spec} />}
        {tab === 'performance' && (
          <PerformancePlaceholder scope={spec}>
            <p class="muted">Tip: correlate spikes with recent actions (copy/flatten/clone) before escalating.</p>
          </PerformancePlaceholder>
        )}
      </Tabs>
    </div>
  );
}
