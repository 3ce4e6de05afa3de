// The page frame: top bar (menu button on narrow windows, running-task count, user and logout), the left sidebar
// (Block Storage > Block Images, Storage > Pools, background tasks) and the main area.

import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { EP } from '../api/endpoints';
import { ROUTES, usePath } from '../router';
import { useSession } from '../state/session';
import { useStore } from '../state/store';
import { tasks } from '../state/tasks';
import { AlertsBadge } from './AlertsBadge';
import { Link } from './Link';
import { Notices } from './Notices';
import { TasksPanel } from './TasksPanel';

interface Props {
  username: string;
  onLogout: () => void;
  children: ComponentChildren;
}

export function Layout({ username, onLogout, children }: Props) {
  const current = usePath();
  const { can } = useSession();
  const [navOpen, setNavOpen] = useState(false);
  const running = useStore(tasks).executing.length;
  const item = (href: string, label: string, active: boolean) => (
    <li>
      <Link href={href} current={active} class="nav-link" onNavigate={() => setNavOpen(false)}>
        {label}
      </Link>
    </li>
  );
  return (
    <div class={navOpen ? 'shell nav-open' : 'shell'}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <button
          type="button"
          class="icon-button nav-toggle"
          aria-label="Navigation"
          aria-expanded={navOpen}
          aria-controls="sidebar"
          onClick={() => setNavOpen(!navOpen)}
        >
          ☰
        </button>
        <span class="brand">basalt</span>
        <span class="spacer" />
        <AlertsBadge />
        <button type="button" class="task-count" onClick={() => setNavOpen(true)} aria-controls="sidebar">
          {running === 0 ? 'No running tasks' : `${running} running task${running === 1 ? '' : 's'}`}
        </button>
        <span class="user" aria-label="Logged in as">
          {username}
        </span>
        <Link href={ROUTES.password} class="top-link">
          Change password
        </Link>
        <button type="button" onClick={onLogout}>
          Log out
        </button>
      </header>
      <nav id="sidebar" class="sidebar" aria-label="Main">
        <h2 class="nav-group">Block Storage</h2>
        <ul>{item(ROUTES.images, 'Block Images', current.startsWith(ROUTES.images))}</ul>
        <h2 class="nav-group">Storage</h2>
        <ul>{item(ROUTES.pools, 'Pools', current.startsWith(ROUTES.pools))}</ul>
        <h2 class="nav-group">Monitoring</h2>
        <ul>{item(ROUTES.alerts, 'Alerts', current === ROUTES.alerts)}</ul>
        {can(EP.listUsers) && (
          <>
            <h2 class="nav-group">Administration</h2>
            <ul>{item(ROUTES.users, 'User Management', current.startsWith('/user-management'))}</ul>
          </>
        )}
        <div class="nav-account">
          <h2 class="nav-group">Account ({username})</h2>
          <ul>{item(ROUTES.password, 'Change password', current === ROUTES.password)}</ul>
        </div>
        <TasksPanel />
      </nav>
      <main id="main" class="main" tabIndex={-1}>
        {children}
      </main>
      <Notices />
    </div>
  );
}
