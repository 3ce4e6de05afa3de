// Administration › User Management, after the Ceph Dashboard's: Users (list, create, edit, set roles, disable, reset a
// password, delete), Roles (system roles read-only, custom roles as a scope × permission matrix), and the Audit log
// of mutating API calls (who, what, when, result).

import { useState } from 'preact/hooks';
import { api } from '../api/client';
import { EP } from '../api/endpoints';
import type { AuditQuery, Permission, RoleInfo, UserInfo } from '../api/types';
import { ActionMenu, type MenuAction } from '../components/ActionMenu';
import { ConfirmDialog } from '../components/ConfirmDialog';
import { Dialog } from '../components/Dialog';
import { ErrorText } from '../components/ErrorText';
import { Link } from '../components/Link';
import { LoadState } from '../components/LoadState';
import { Pager } from '../components/Pager';
import { useAction } from '../components/useAction';
import { useLoad } from '../components/useLoad';
import { formatTime } from '../lib/time';
import { ROUTES } from '../router';
import { notify, notifyError } from '../state/notices';
import { useSession } from '../state/session';

export type UserTab = 'users' | 'roles' | 'audit';

const SCOPES = [
  'rbd-image',
  'pool',
  'user',
  'log',
  'config-opt',
  'grafana',
  'prometheus',
  'iscsi',
  'rbd-mirroring',
  'hosts',
  'osd',
  'monitor',
  'rgw',
  'cephfs',
  'manager',
  'dashboard-settings',
  'nfs-ganesha',
  'nvme-of',
  'smb',
];
const PERMISSIONS: Permission[] = ['read', 'create', 'update', 'delete'];

export function UserManagementPage({ tab }: { tab: UserTab }) {
  const { can } = useSession();
  const tabs: { id: UserTab; label: string; href: string; shown: boolean }[] = [
    { id: 'users', label: 'Users', href: ROUTES.users, shown: can(EP.listUsers) },
    { id: 'roles', label: 'Roles', href: ROUTES.roles, shown: can(EP.listRoles) },
    { id: 'audit', label: 'Audit log', href: ROUTES.audit, shown: can(EP.audit) },
  ];
  return (
    <section class="page" aria-labelledby="users-title">
      <p class="breadcrumb">Administration › User Management</p>
      <h1 id="users-title">User Management</h1>
      <nav class="page-tabs" aria-label="User Management tabs">
        {tabs
          .filter((t) => t.shown)
          .map((t) => (
            <Link key={t.id} href={t.href} current={t.id === tab} class="page-tab">
              {t.label}
            </Link>
          ))}
      </nav>
      {tab === 'users' && <UsersTab />}
      {tab === 'roles' && <RolesTab />}
      {tab === 'audit' && <AuditTab />}
    </section>
  );
}

type UserOpen = { kind: 'create' } | { kind: 'edit' | 'delete' | 'password'; user: UserInfo } | null;

function UsersTab() {
  const { can, current } = useSession();
  const users = useLoad(() => api.users(), []);
  const roles = useLoad(() => api.roles(), []);
  const [open, setOpen] = useState<UserOpen>(null);
  const me = current?.username;
  const actions = (u: UserInfo): MenuAction[] => {
    const self = u.username === me ? 'You cannot do this to your own account.' : null;
    const list: MenuAction[] = [];
    if (can(EP.updateUser)) {
      list.push({ label: 'Edit', onSelect: () => setOpen({ kind: 'edit', user: u }) });
      list.push({ label: 'Reset password', onSelect: () => setOpen({ kind: 'password', user: u }) });
      list.push({
        label: u.enabled ? 'Disable' : 'Enable',
        disabledReason: self,
        onSelect: async () => {
          try {
            await api.updateUser(u.username, { enabled: !u.enabled });
            notify('success', `User ${u.username} is ${u.enabled ? 'disabled' : 'enabled'}.`);
            users.reload();
          } catch (e) {
            notifyError(e);
          }
        },
      });
    }
    if (can(EP.deleteUser))
      list.push({
        label: 'Delete',
        danger: true,
        disabledReason: self,
        onSelect: () => setOpen({ kind: 'delete', user: u }),
      });
    return list;
  };
  return (
    <div class="tab-content">
      <div class="toolbar">
        {can(EP.createUser) && (
          <button type="button" class="primary" onClick={() => setOpen({ kind: 'create' })}>
            + Create User
          </button>
        )}
        <span class="spacer" />
        <button type="button" onClick={users.reload}>
          ⟳ Refresh
        </button>
      </div>
      <LoadState what="users" loaded={users} loadingInTable />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Users</caption>
          <thead>
            <tr>
              <th scope="col">Username</th>
              <th scope="col">Name</th>
              <th scope="col">Email</th>
              <th scope="col">Roles</th>
              <th scope="col">Enabled</th>
              <th scope="col">Last update</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {users.data === undefined && (
              <tr>
                <td colSpan={7} class="empty loading-row">
                  {users.error ? 'The users could not be loaded.' : 'Loading users…'}
                </td>
              </tr>
            )}
            {users.data?.map((u) => (
              <tr key={u.username}>
                <th scope="row">{u.username}</th>
                <td>{u.name || <span class="muted">–</span>}</td>
                <td>{u.email || <span class="muted">–</span>}</td>
                <td>
                  {u.roles.map((r) => (
                    <span class="tag" key={r}>
                      {r}
                    </span>
                  ))}
                </td>
                <td>
                  <span class={u.enabled ? 'badge badge-ok' : 'badge badge-warn'}>
                    {u.enabled ? 'Yes' : 'Disabled'}
                  </span>
                </td>
                <td>{formatTime(u.last_update)}</td>
                <td class="actions-cell">
                  <ActionMenu subject={`user ${u.username}`} actions={actions(u)} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {(open?.kind === 'create' || open?.kind === 'edit') && (
        <UserDialog
          user={open.kind === 'edit' ? open.user : null}
          roles={roles.data ?? []}
          onClose={() => setOpen(null)}
          onDone={users.reload}
        />
      )}
      {open?.kind === 'password' && (
        <PasswordDialog user={open.user} onClose={() => setOpen(null)} onDone={users.reload} />
      )}
      {open?.kind === 'delete' && (
        <ConfirmDialog
          title="Delete user"
          confirmLabel="Delete User"
          warnings={['The user is removed with their sessions; their audit records stay.']}
          onClose={() => setOpen(null)}
          onConfirm={async () => {
            await api.deleteUser(open.user.username);
            notify('success', `User ${open.user.username} was deleted.`);
            users.reload();
          }}
        >
          <p>
            Delete user <strong>{open.user.username}</strong>?
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

function RoleChecks({
  roles,
  chosen,
  onChange,
}: {
  roles: RoleInfo[];
  chosen: string[];
  onChange: (r: string[]) => void;
}) {
  return (
    <fieldset class="role-checks">
      <legend>Roles</legend>
      {roles.map((r) => (
        <label class="check" key={r.name}>
          <input
            type="checkbox"
            checked={chosen.includes(r.name)}
            onChange={(e) =>
              onChange(e.currentTarget.checked ? [...chosen, r.name] : chosen.filter((c) => c !== r.name))
            }
          />
          {r.name} <span class="muted">{r.description}</span>
        </label>
      ))}
    </fieldset>
  );
}

function UserDialog({
  user,
  roles,
  onClose,
  onDone,
}: {
  user: UserInfo | null;
  roles: RoleInfo[];
  onClose: () => void;
  onDone: () => void;
}) {
  const [username, setUsername] = useState(user?.username ?? '');
  const [password, setPassword] = useState('');
  const [name, setName] = useState(user?.name ?? '');
  const [email, setEmail] = useState(user?.email ?? '');
  const [enabled, setEnabled] = useState(user?.enabled ?? true);
  const [chosen, setChosen] = useState<string[]>(user?.roles ?? []);
  const action = useAction();
  const submit = async (e: Event) => {
    e.preventDefault();
    const ok = await action.run(async () => {
      if (user) await api.updateUser(user.username, { name, email, enabled, roles: chosen });
      else await api.createUser({ username, password, name, email, enabled, roles: chosen });
    });
    if (ok) {
      notify('success', user ? `User ${user.username} was updated.` : `User ${username} was created.`);
      onDone();
      onClose();
    }
  };
  return (
    <Dialog title={user ? `Edit user ${user.username}` : 'Create User'} onClose={onClose}>
      <form noValidate onSubmit={submit}>
        <div class="dialog-body form-grid">
          <ErrorText error={action.error} />
          {!user && (
            <label class="field">
              Username *
              <input value={username} required autoComplete="off" onInput={(e) => setUsername(e.currentTarget.value)} />
            </label>
          )}
          {!user && (
            <label class="field">
              Password *
              <input
                type="password"
                value={password}
                required
                autoComplete="new-password"
                onInput={(e) => setPassword(e.currentTarget.value)}
              />
            </label>
          )}
          <label class="field">
            Full name
            <input value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <label class="field">
            Email
            <input type="email" value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </label>
          <RoleChecks roles={roles} chosen={chosen} onChange={setChosen} />
          <label class="check">
            <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.currentTarget.checked)} />
            Enabled (a disabled user cannot log in, and their sessions end)
          </label>
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            {user ? 'Save' : 'Create User'}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}

function PasswordDialog({ user, onClose, onDone }: { user: UserInfo; onClose: () => void; onDone: () => void }) {
  const [password, setPassword] = useState('');
  const action = useAction();
  return (
    <Dialog title={`Reset password of ${user.username}`} onClose={onClose}>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          if (await action.run(() => api.updateUser(user.username, { password }))) {
            notify('success', `The password of ${user.username} was reset; their sessions ended.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body form-grid">
          <ErrorText error={action.error} />
          <label class="field">
            New password *
            <input
              type="password"
              value={password}
              autoComplete="new-password"
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
          </label>
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            Reset password
          </button>
        </footer>
      </form>
    </Dialog>
  );
}

type RoleOpen = { kind: 'create' } | { kind: 'edit' | 'delete'; role: RoleInfo } | null;

function RolesTab() {
  const { can } = useSession();
  const roles = useLoad(() => api.roles(), []);
  const [open, setOpen] = useState<RoleOpen>(null);
  const actions = (r: RoleInfo): MenuAction[] => {
    const system = r.system ? 'A system role cannot change.' : null;
    const list: MenuAction[] = [];
    if (can(EP.updateRole))
      list.push({ label: 'Edit', disabledReason: system, onSelect: () => setOpen({ kind: 'edit', role: r }) });
    if (can(EP.deleteRole))
      list.push({
        label: 'Delete',
        danger: true,
        disabledReason: system,
        onSelect: () => setOpen({ kind: 'delete', role: r }),
      });
    return list;
  };
  return (
    <div class="tab-content">
      <div class="toolbar">
        {can(EP.createRole) && (
          <button type="button" class="primary" onClick={() => setOpen({ kind: 'create' })}>
            + Create Role
          </button>
        )}
      </div>
      <LoadState what="roles" loaded={roles} />
      <div class="table-wrap">
        <table class="table">
          <caption class="sr-only">Roles</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Description</th>
              <th scope="col">Permissions</th>
              <th scope="col">System</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {roles.data?.map((r) => (
              <tr key={r.name}>
                <th scope="row">{r.name}</th>
                <td>{r.description}</td>
                <td class="role-perms">
                  {Object.entries(r.scopes_permissions)
                    .map(([scope, perms]) => `${scope}: ${perms.join(', ')}`)
                    .join('; ')}
                </td>
                <td>{r.system ? 'Yes' : 'No'}</td>
                <td class="actions-cell">
                  <ActionMenu subject={`role ${r.name}`} actions={actions(r)} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {(open?.kind === 'create' || open?.kind === 'edit') && (
        <RoleDialog
          role={open.kind === 'edit' ? open.role : null}
          onClose={() => setOpen(null)}
          onDone={roles.reload}
        />
      )}
      {open?.kind === 'delete' && (
        <ConfirmDialog
          title="Delete role"
          confirmLabel="Delete Role"
          warnings={['Users with this role lose its permissions.']}
          onClose={() => setOpen(null)}
          onConfirm={async () => {
            await api.deleteRole(open.role.name);
            notify('success', `Role ${open.role.name} was deleted.`);
            roles.reload();
          }}
        >
          <p>
            Delete role <strong>{open.role.name}</strong>?
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

function RoleDialog({ role, onClose, onDone }: { role: RoleInfo | null; onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState(role?.name ?? '');
  const [description, setDescription] = useState(role?.description ?? '');
  const [grants, setGrants] = useState<Record<string, Permission[]>>(role?.scopes_permissions ?? {});
  const action = useAction();
  const has = (scope: string, p: Permission) => grants[scope]?.includes(p) ?? false;
  const toggle = (scope: string, p: Permission, on: boolean) => {
    const now = new Set(grants[scope] ?? []);
    if (on) now.add(p);
    else now.delete(p);
    const next = { ...grants, [scope]: PERMISSIONS.filter((x) => now.has(x)) };
    if (next[scope]?.length === 0) delete next[scope];
    setGrants(next);
  };
  return (
    <Dialog title={role ? `Edit role ${role.name}` : 'Create Role'} onClose={onClose} wide>
      <form
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          const body = { name, description, scopes_permissions: grants };
          if (await action.run(() => (role ? api.updateRole(body) : api.createRole(body)))) {
            notify('success', role ? `Role ${name} was updated.` : `Role ${name} was created.`);
            onDone();
            onClose();
          }
        }}
      >
        <div class="dialog-body form-grid">
          <ErrorText error={action.error} />
          {!role && (
            <label class="field">
              Name *
              <input value={name} autoComplete="off" onInput={(e) => setName(e.currentTarget.value)} />
            </label>
          )}
          <label class="field">
            Description
            <input value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
          </label>
          <table class="table perm-matrix">
            <caption>Permissions: scope × permission</caption>
            <thead>
              <tr>
                <th scope="col">Scope</th>
                {PERMISSIONS.map((p) => (
                  <th scope="col" key={p}>
                    {p}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {SCOPES.map((scope) => (
                <tr key={scope}>
                  <th scope="row">{scope}</th>
                  {PERMISSIONS.map((p) => (
                    <td key={p}>
                      <input
                        type="checkbox"
                        aria-label={`${scope} ${p}`}
                        checked={has(scope, p)}
                        onChange={(e) => toggle(scope, p, e.currentTarget.checked)}
                      />
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        <footer class="dialog-foot">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={action.busy}>
            {role ? 'Save' : 'Create Role'}
          </button>
        </footer>
      </form>
    </Dialog>
  );
}

function AuditTab() {
  const [query, setQuery] = useState<AuditQuery>({ offset: 0, limit: 50 });
  const [search, setSearch] = useState('');
  const log = useLoad(() => api.audit(query), [JSON.stringify(query)]);
  const set = (patch: Partial<AuditQuery>) => setQuery({ ...query, offset: 0, ...patch });
  return (
    <div class="tab-content">
      <p class="muted">
        Every call that changes something is recorded: who made it, what it named, when, and whether it succeeded. Quote
        the time and the path when escalating.
      </p>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          set({ search });
        }}
      >
        <label class="inline-label">
          Search
          <input
            type="search"
            value={search}
            placeholder="image, pool or user name"
            onInput={(e) => setSearch(e.currentTarget.value)}
          />
        </label>
        <label class="inline-label">
          Result
          <select
            value={query.result ?? ''}
            onChange={(e) => {
              const v = e.currentTarget.value;
              set({ result: v === 'success' || v === 'failure' ? v : undefined });
            }}
          >
            <option value="">All</option>
            <option value="success">Success</option>
            <option value="failure">Failure</option>
          </select>
        </label>
        <button type="submit">Filter</button>
        <span class="spacer" />
        <button type="button" onClick={log.reload}>
          ⟳ Refresh
        </button>
      </form>
      <LoadState what="audit records" loaded={log} loadingInTable />
      <div class="table-wrap">
        <table class="table audit-table">
          <caption class="sr-only">Audit log</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">User</th>
              <th scope="col">Action</th>
              <th scope="col">Names</th>
              <th scope="col">Result</th>
            </tr>
          </thead>
          <tbody>
            {log.data === undefined && (
              <tr>
                <td colSpan={5} class="empty loading-row">
                  {log.error ? 'The audit log could not be loaded.' : 'Loading the audit log…'}
                </td>
              </tr>
            )}
            {log.data?.items.length === 0 && (
              <tr>
                <td colSpan={5} class="empty">
                  No recorded call matches.
                </td>
              </tr>
            )}
            {log.data?.items.map((r, i) => (
              <tr key={`${r.time}-${i}`}>
                <td>{formatTime(r.time)}</td>
                <td>{r.username}</td>
                <td>
                  <code>
                    {r.method} {r.path}
                  </code>
                </td>
                <td>{r.target || <span class="muted">–</span>}</td>
                <td>
                  <span class={r.result === 'success' ? 'badge badge-ok' : 'badge badge-warn'}>
                    {r.result === 'success' ? 'Success' : 'Failure'} ({r.status})
                  </span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Pager
        offset={query.offset}
        limit={query.limit}
        shown={log.data?.items.length ?? 0}
        total={log.data?.total}
        noun="record"
        sizes={[25, 50, 100]}
        onOffset={(offset) => setQuery({ ...query, offset })}
        onLimit={(limit) => set({ limit })}
      />
    </div>
  );
}
