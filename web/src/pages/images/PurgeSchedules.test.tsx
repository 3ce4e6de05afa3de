// Component tests of the Trash tab's purge schedules against a stubbed API: the empty state says nothing is purged
// on its own, schedules and next runs are listed, a user who may delete images removes one item (the right query),
// a read-only user sees no controls, and the Move to Trash dialog says what the expiration means.
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ImageObject, PurgeSchedule, ScheduledPurge } from '../../api/types';
import { session } from '../../state/session';
import { MoveToTrashDialog } from './MoveToTrashDialog';
import { PurgeSchedules } from './PurgeSchedules';

let root: HTMLDivElement;
let schedules: PurgeSchedule[] = [];
let status: ScheduledPurge[] = [];
let fetchMock: ReturnType<typeof vi.fn>;

async function settle() {
  for (let i = 0; i < 6; i += 1) await act(async () => await Promise.resolve());
}

function login(permissions: string[]) {
  session.set({ token: 't', username: 'u', permissions: { 'rbd-image': permissions } as never });
}

beforeEach(() => {
  fetchMock = vi.fn(async (url: string, init: RequestInit) => {
    if (init.method === 'DELETE') return new Response(null, { status: 204 });
    if (init.method === 'POST') return new Response('{}', { status: 201 });
    if (url.startsWith('/api/block/image/trash/purge-schedule/status'))
      return new Response(JSON.stringify(status), { status: 200 });
    if (url.startsWith('/api/block/image/trash/purge-schedule'))
      return new Response(JSON.stringify(schedules), { status: 200 });
    return new Response('{}', { status: 200 });
  });
  vi.stubGlobal('fetch', fetchMock);
  root = document.createElement('div');
  document.body.append(root);
});

afterEach(() => {
  render(null, root);
  root.remove();
  session.set(null);
  vi.unstubAllGlobals();
});

const text = () => root.textContent ?? '';
const pools = { names: ['rbd'], ready: true };

describe('purge schedules in the Trash tab', () => {
  it('says that without a schedule nothing is purged on its own', async () => {
    login(['read']);
    schedules = [];
    status = [];
    act(() => render(<PurgeSchedules pools={pools} />, root));
    await settle();
    expect(text()).toContain('No purge schedule: expired images stay in the trash until someone purges them.');
    expect(fetchMock.mock.calls[0]?.[0]).toBe('/api/block/image/trash/purge-schedule?recursive=true');
    expect(root.querySelector('button')).toBeNull();
  });

  it('lists schedules and next runs, and removes one item', async () => {
    login(['read', 'delete']);
    schedules = [
      {
        level: 'rbd',
        pool_name: 'rbd',
        namespace: null,
        schedule: [
          { interval: '12h', start_time: null },
          { interval: '1d', start_time: '02:00:00' },
        ],
      },
    ];
    status = [{ pool_name: 'rbd', namespace: '', schedule_time: '2030-01-01T02:00:00Z' }];
    act(() => render(<PurgeSchedules pools={pools} />, root));
    await settle();
    expect(text()).toContain('rbd (all namespaces)');
    expect(text()).toContain('every 1d from 02:00 UTC');
    expect(text()).toContain('Next purge of rbd:');
    const remove = root.querySelector<HTMLButtonElement>(
      'button[aria-label="Remove schedule every 1d from 02:00 UTC of rbd (all namespaces)"]',
    );
    expect(remove).not.toBeNull();
    await act(async () => remove?.click());
    await settle();
    const deleted = fetchMock.mock.calls.find(([, init]) => (init as RequestInit).method === 'DELETE');
    expect(deleted?.[0]).toBe(
      '/api/block/image/trash/purge-schedule?pool_name=rbd&interval=1d&start_time=02%3A00%3A00',
    );
  });
});

describe('Move to Trash dialog', () => {
  it('says plainly that the expiration does not delete the image', async () => {
    login(['read', 'create', 'delete']);
    const image = { name: 'vm1', pool_name: 'rbd', namespace: '', snapshots: [] } as unknown as ImageObject;
    act(() => render(<MoveToTrashDialog image={image} onClose={() => {}} onDone={() => {}} />, root));
    await settle();
    expect(text()).toContain('not deleted automatically');
    expect(text()).toContain('purge schedule');
  });
});
