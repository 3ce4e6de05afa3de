// The current alerts, shared by the header's badge and the Alerts page; refreshed by whichever shows them.

import { api } from '../api/client';
import type { Alert } from '../api/types';
import { createStore } from './store';

export const alerts = createStore<Alert[] | undefined>(undefined);

export async function refreshAlerts(): Promise<Alert[]> {
  const list = await api.alerts();
  alerts.set(list);
  return list;
}
