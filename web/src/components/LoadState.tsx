// What a list shows beside its data while it loads or after a refresh failed: the first load says it is loading (never
// "empty"), and an error after data arrived keeps that data on screen, marked stale with the time it was loaded.

import { useEffect, useRef, useState } from 'preact/hooks';
import { formatClock, offsetLabel } from '../lib/chart';
import { ErrorText } from './ErrorText';
import type { Loaded } from './useLoad';

interface Props<T> {
  what: string;
  loaded: Loaded<T>;
  /** The list's own table says "Loading …" in its body, so this does not say it a second time. */
  loadingInTable?: boolean;
}

export function LoadState<T>({ what, loaded, loadingInTable = false }: Props<T>) {
  const [at, setAt] = useState<number | null>(null);
  const last = useRef<T | undefined>(undefined);
  useEffect(() => {
    if (loaded.data !== undefined && loaded.data !== last.current && !loaded.error) {
      last.current = loaded.data;
      setAt(Date.now() / 1000);
    }
  }, [loaded.data, loaded.error]);
  if (loaded.error && loaded.data !== undefined) {
    return (
      <div class="stale" role="alert">
        <strong>Stale:</strong> refreshing the {what} failed, so this is what they were at{' '}
        {at === null ? 'the last load' : `${formatClock(at, true)} (${offsetLabel(at)})`}.
        <ErrorText error={loaded.error} hint="Refresh to try again; check that the server is running." />
      </div>
    );
  }
  if (loaded.error)
    return <ErrorText error={loaded.error} hint="Refresh to try again; check that the server is running." />;
  if (loaded.data === undefined && loaded.loading && !loadingInTable) {
    return (
      <p class="loading" role="status">
        Loading {what}…
      </p>
    );
  }
  return null;
}
