// An error shown where the action was taken: the server's message, its code, and what to do about it.

import { useLayoutEffect, useRef } from 'preact/hooks';
import { errorDetails, errorText } from '../state/notices';

interface Props {
  error: unknown;
  hint?: string | undefined;
}

export function ErrorText({ error, hint }: Props) {
  const ref = useRef<HTMLDivElement>(null);
  // In a dialog the error takes the focus, scrolled into view, so a refused submit never looks like nothing happened.
  // A layout effect: the focus moves as the error appears, not a frame later (a key press in between would be lost).
  useLayoutEffect(() => {
    const el = ref.current;
    if (el && el.closest('dialog')) {
      el.focus();
      el.scrollIntoView?.({ block: 'nearest' });
    }
  }, [error]);
  if (error === null || error === undefined) return null;
  return (
    <div class="error-text" role="alert" ref={ref} tabIndex={-1}>
      <p>{errorText(error)}</p>
      {hint && <p class="hint">What to do: {hint}</p>}
      {errorDetails(error) && <p class="error-details">{errorDetails(error)}</p>}
    </div>
  );
}
