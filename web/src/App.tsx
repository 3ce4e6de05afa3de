// The app: the login gate, then the frame and the page the route names.

import { AlertsPage } from './pages/AlertsPage';
import { UserManagementPage } from './pages/UserManagementPage';
import { useEffect } from 'preact/hooks';
import { api } from './api/client';
import { Layout } from './components/Layout';
import { Link } from './components/Link';
import { LoginPage } from './pages/LoginPage';
import { PasswordPage } from './pages/PasswordPage';
import { PoolsPage } from './pages/PoolsPage';
import { BlockImagesPage, type BlockTab } from './pages/images/BlockImagesPage';
import { navigate, ROUTES, usePath } from './router';
import { session } from './state/session';
import { useStore } from './state/store';
import { startTaskPolling, stopTaskPolling } from './state/tasks';

const TAB_OF_PATH: Record<string, BlockTab> = {
  [ROUTES.images]: 'images',
  [ROUTES.namespaces]: 'namespaces',
  [ROUTES.trash]: 'trash',
  [ROUTES.performance]: 'performance',
};

export function App() {
  const current = useStore(session);
  const path = usePath();
  const loggedIn = current !== null;

  useEffect(() => {
    if (!loggedIn) {
      stopTaskPolling();
      return;
    }
    startTaskPolling();
    // Refresh the permissions a stored token carries (roles may have changed since login).
    api
      .authCheck()
      .then((check) => {
        const now = session.get();
        if (now) session.set({ ...now, username: check.username, permissions: check.permissions });
      })
      .catch(() => undefined);
  }, [loggedIn]);

  useEffect(() => {
    if (loggedIn && (path === '/' || path === ROUTES.login)) navigate(ROUTES.images, true);
  }, [loggedIn, path]);

  if (!current) return <LoginPage />;

  const logout = () => {
    void api.logout().catch(() => undefined);
    session.set(null);
    navigate(ROUTES.login);
  };

  const tab = TAB_OF_PATH[path];
  let page;
  if (tab) page = <BlockImagesPage tab={tab} />;
  else if (path === ROUTES.pools) page = <PoolsPage />;
  else if (path === ROUTES.password) page = <PasswordPage username={current.username} />;
  else if (path === ROUTES.users) page = <UserManagementPage tab="users" />;
  else if (path === ROUTES.roles) page = <UserManagementPage tab="roles" />;
  else if (path === ROUTES.audit) page = <UserManagementPage tab="audit" />;
  else if (path === ROUTES.alerts) page = <AlertsPage />;
  else
    page = (
      <section class="page">
        <h1>Page not found</h1>
        <p>
          Go to <Link href={ROUTES.images}>Block Images</Link>.
        </p>
      </section>
    );

  return (
    <Layout username={current.username} onLogout={logout}>
      {page}
    </Layout>
  );
}
