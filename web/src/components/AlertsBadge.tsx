// The header's alert count: a link to the Alerts page, red while any alert is critical. Refreshed every 15 s.

import { useCallback, useEffect } from 'preact/hooks';
import { ROUTES } from '../router';
import { alerts, refreshAlerts } from '../state/alerts';
import { useStore } from '../state/store';
import { Link } from './Link';
import { usePolling } from './usePolling';

export function AlertsBadge() {
  const list = useStore(alerts);
  const reload = useCallback(() => void refreshAlerts().catch(() => undefined), []);
  useEffect(reload, [reload]);
  usePolling(reload, 15_000);
  if (list === undefined) return null;
  const critical = list.some((a) => a.severity === 'critical');
  const n = list.length;
  const kind = n === 0 ? 'badge-ok' : critical ? 'badge-err' : 'badge-warn';
  return (
    <Link href={ROUTES.alerts} class={`top-link alerts-link badge ${kind}`}>
      {n === 0 ? 'No alerts' : `${n} alert${n === 1 ? '' : 's'}`}
    </Link>
  );
}
