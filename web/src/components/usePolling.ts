// Reloads a view every few seconds while the page is visible: paused in a hidden browser tab, reloaded at once when
// the tab shows again, stopped when the view unmounts (tabs render only the chosen panel).

import { useEffect } from 'preact/hooks';

export function usePolling(reload: () => void, ms: number): void {
  useEffect(() => {
    let timer: ReturnType<typeof setInterval> | undefined;
    const start = () => {
      if (timer === undefined) timer = setInterval(reload, ms);
    };
    const stop = () => {
      clearInterval(timer);
      timer = undefined;
    };
    const onVisibility = () => {
      if (document.hidden) return stop();
      reload();
      start();
    };
    if (!document.hidden) start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [reload, ms]);
}
