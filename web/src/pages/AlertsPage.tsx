// Monitoring > Alerts: what needs attention, critical first, with when it was first seen and what to do.

import { useCallback } from 'preact/hooks';
import { LoadState } from '../components/LoadState';
import { useLoad } from '../components/useLoad';
import { usePolling } from '../components/usePolling';
import { refreshAlerts } from '../state/alerts';
import { formatTime } from '../lib/time';

export function AlertsPage() {
  const loaded = useLoad(refreshAlerts, []);
  const reload = useCallback(() => loaded.reload(), [loaded.reload]);
  usePolling(reload, 15_000);
  const list = loaded.data;
  return (
    <section class="page">
      <p class="breadcrumb">Monitoring › Alerts</p>
      <h1>Alerts</h1>
      <LoadState what="alerts" loaded={loaded} />
      {list !== undefined && list.length === 0 && <p>No alerts: every pool, image, task and certificate is fine.</p>}
      {list !== undefined && list.length > 0 && (
        <div class="table-wrap">
          <table class="table">
            <caption class="sr-only">Current alerts</caption>
            <thead>
              <tr>
                <th scope="col">Severity</th>
                <th scope="col">Summary</th>
                <th scope="col">Detail</th>
                <th scope="col">Since</th>
              </tr>
            </thead>
            <tbody>
              {list.map((a) => (
                <tr key={a.id} data-alert-id={a.id}>
                  <td>
                    <span class={a.severity === 'critical' ? 'badge badge-err' : 'badge badge-warn'}>{a.severity}</span>
                  </td>
                  <td>{a.summary}</td>
                  <td>{a.detail}</td>
                  <td>{formatTime(new Date(a.since * 1000).toISOString())}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
