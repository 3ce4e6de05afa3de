// The corner list of notices: refusals stay until dismissed, confirmations fade; announced politely.

import { dismiss, notices } from '../state/notices';
import { useStore } from '../state/store';

export function Notices() {
  const list = useStore(notices);
  return (
    <div class="notices" role="region" aria-live="polite" aria-label="Notifications">
      {list.map((n) => (
        <div key={n.id} class={`notice notice-${n.kind}`} role={n.kind === 'error' ? 'alert' : 'status'}>
          <div>
            <p>{n.text}</p>
            {n.hint && <p class="hint">What to do: {n.hint}</p>}
            {n.details && <p class="error-details">{n.details}</p>}
          </div>
          <button type="button" class="icon-button" aria-label="Dismiss" onClick={() => dismiss(n.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
