// Block Storage > Block Images: the prerequisite check (a healthy pool tagged rbd) and the four tabs.

import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import { Callout } from '../../components/Callout';
import { ErrorText } from '../../components/ErrorText';
import { Link } from '../../components/Link';
import { useLoad } from '../../components/useLoad';
import { ROUTES } from '../../router';
import { useSession } from '../../state/session';
import { isUsableRbdPool } from '../rbdPools';
import { ImagesTab } from './ImagesTab';
import { NamespacesTab } from './NamespacesTab';
import { OverallPerformanceTab } from './OverallPerformanceTab';
import { TrashTab } from './TrashTab';

export type BlockTab = 'images' | 'namespaces' | 'trash' | 'performance';

const TABS: { id: BlockTab; label: string; href: string }[] = [
  { id: 'images', label: 'Images', href: ROUTES.images },
  { id: 'namespaces', label: 'Namespaces', href: ROUTES.namespaces },
  { id: 'trash', label: 'Trash', href: ROUTES.trash },
  { id: 'performance', label: 'Overall Performance', href: ROUTES.performance },
];

/** What the tabs know about pools: the usable rbd pools, or null when the role cannot read pools. */
export interface PoolState {
  names: string[] | null;
  ready: boolean;
}

export function BlockImagesPage({ tab }: { tab: BlockTab }) {
  const { can } = useSession();
  const canReadPools = can(EP.listPools);
  const pools = useLoad(() => (canReadPools ? api.pools() : Promise.resolve(null)), [canReadPools]);
  const usable = pools.data ? pools.data.filter(isUsableRbdPool).map((p) => p.pool_name) : null;
  const poolState: PoolState = { names: usable, ready: !pools.loading || pools.data !== undefined };

  return (
    <section class="page" aria-labelledby="images-title">
      <p class="breadcrumb">Block Storage › Block Images</p>
      <h1 id="images-title">Block Images</h1>
      {usable !== null && usable.length === 0 && (
        <div class="prereq" role="status">
          <h2>No healthy rbd pool</h2>
          <p>
            Images live in a pool that is healthy and tagged with the <code>rbd</code> application, and there is none
            yet. Create a pool or tag one with rbd in <Link href={ROUTES.pools}>Storage › Pools</Link>, then come back.
          </p>
        </div>
      )}
      {!canReadPools && (
        <Callout kind="info">Your role cannot read pools, so this page cannot check for a healthy rbd pool.</Callout>
      )}
      <ErrorText error={pools.error} />
      <nav class="page-tabs" aria-label="Block Images tabs">
        {TABS.map((t) => (
          <Link key={t.id} href={t.href} current={t.id === tab} class="page-tab">
            {t.label}
          </Link>
        ))}
      </nav>
      {tab === 'images' && <ImagesTab pools={poolState} />}
      {tab === 'namespaces' && <NamespacesTab pools={poolState} />}
      {tab === 'trash' && <TrashTab pools={poolState} />}
      {tab === 'performance' && <OverallPerformanceTab />}
    </section>
  );
}
