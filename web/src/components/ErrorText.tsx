// An error shown where the action was taken: the server's message, its code, and what to do about it.

import { errorText } from '../state/notices';

interface Props {
  error: unknown;
  hint?: string | undefined;
}

export function ErrorText({ error, hint }: Props) {
  if (error === null || error === undefined) return null;
  return (
    <div class="error-text" role="alert">
      <p>{errorText(error)}</p>
      {hint && <p class="hint">What to do: {hint}</p>}
    </div>
  );
}
