// The login form: POST /api/auth, then the token and permissions go into the session.

import { useState } from 'preact/hooks';
import { api } from '../api/client';
import { ErrorText } from '../components/ErrorText';
import { useAction } from '../components/useAction';
import { session } from '../state/session';

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const action = useAction();
  return (
    <main class="login">
      <form
        class="login-card"
        aria-labelledby="login-title"
        onSubmit={async (e) => {
          e.preventDefault();
          await action.run(async () => {
            const answer = await api.login(username, password);
            session.set({ token: answer.token, username: answer.username, permissions: answer.permissions });
          });
        }}
      >
        <h1 id="login-title">basalt</h1>
        <p class="muted">Log in to manage block images.</p>
        <label for="login-user">Username</label>
        <input
          id="login-user"
          autoComplete="username"
          required
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
        />
        <label for="login-password">Password</label>
        <input
          id="login-password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
        <ErrorText error={action.error} />
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}
