// Changing one's own password (POST /api/user/{username}/change_password).

import { useState } from 'preact/hooks';
import { api } from '../api/client';
import { ErrorText } from '../components/ErrorText';
import { Field } from '../components/Field';
import { useAction } from '../components/useAction';
import { notify } from '../state/notices';

export function PasswordPage({ username }: { username: string }) {
  const [oldPassword, setOld] = useState('');
  const [newPassword, setNew] = useState('');
  const [repeat, setRepeat] = useState('');
  const [touched, setTouched] = useState(false);
  const action = useAction();
  const mismatch = touched && repeat !== newPassword ? 'The two new passwords differ.' : undefined;
  return (
    <section class="page narrow-page">
      <h1>Change password</h1>
      <p class="muted">For user {username}.</p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setTouched(true);
          if (repeat !== newPassword) return;
          const ok = await action.run(() => api.changePassword(username, oldPassword, newPassword));
          if (ok) {
            notify('success', 'Your password was changed.');
            setOld('');
            setNew('');
            setRepeat('');
            setTouched(false);
          }
        }}
      >
        <Field label="Current password" required>
          {({ id }) => (
            <input
              id={id}
              type="password"
              autoComplete="current-password"
              required
              value={oldPassword}
              onInput={(e) => setOld(e.currentTarget.value)}
            />
          )}
        </Field>
        <Field label="New password" required>
          {({ id }) => (
            <input
              id={id}
              type="password"
              autoComplete="new-password"
              required
              value={newPassword}
              onInput={(e) => setNew(e.currentTarget.value)}
            />
          )}
        </Field>
        <Field label="Repeat the new password" required error={mismatch}>
          {({ id, describedBy, invalid }) => (
            <input
              id={id}
              type="password"
              autoComplete="new-password"
              required
              aria-describedby={describedBy}
              aria-invalid={invalid}
              value={repeat}
              onInput={(e) => setRepeat(e.currentTarget.value)}
            />
          )}
        </Field>
        <ErrorText error={action.error} />
        <button type="submit" class="primary" disabled={action.busy}>
          Change password
        </button>
      </form>
    </section>
  );
}
