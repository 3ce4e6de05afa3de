// Loads data for a view: the value, the error, and a reload that later refreshes keep the old value shown.

import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const reload = useCallback(() => {
    generation.current += 1;
    const mine = generation.current;
    setLoading(true);
    load()
      .then((value) => {
        if (mine !== generation.current) return;
        setData(value);
        setError(null);
      })
      .catch((e: unknown) => {
        if (mine === generation.current) setError(e);
      })
      .finally(() => {
        if (mine === generation.current) setLoading(false);
      });
  }, deps);
  useEffect(reload, [reload]);
  return { data, error, loading, reload };
}
