// The Images tab: the server-paged, searchable, sortable table of images, + Create Image, row actions and expandable
// rows; rows refresh by themselves when a background task ends.

import { Fragment, type Ref } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { ImageListQuery, ImageObject, SortKey, Task } from '../../api/types';
import { ActionMenu, type MenuAction } from '../../components/ActionMenu';
import { LoadState } from '../../components/LoadState';
import { Pager } from '../../components/Pager';
import { useLoad } from '../../components/useLoad';
import { fittingColumns, fixedWidth, type ColumnSpec } from '../../lib/columns';
import {
  busyReason,
  deleteBlockedReason,
  flattenBlockedReason,
  runningTaskOn,
  specOf,
  trashBlockedReason,
} from '../../lib/imageRules';
import { formatDuration, taskProgress } from '../../lib/taskProgress';
import { formatBytes, UNKNOWN } from '../../lib/units';
import { useSession } from '../../state/session';
import { useStore } from '../../state/store';
import { onTaskEnded, tasks } from '../../state/tasks';
import type { PoolState } from './BlockImagesPage';
import { ConnectPanel } from './ConnectPanel';
import { imageNameOf, takeDrill } from './drill';
import { ImageDialogs, type ImageDialog } from './ImageDialogs';
import { ImageExpanded } from './ImageExpanded';
import { StatusBadge } from './StatusBadge';

const PAGE_SIZES = [10, 25, 50, 100];

/** Short codes for the features column; the full names are in its tooltip. */
const FEATURE_CODES: Record<string, string> = {
  layering: 'L',
  striping: 'S',
  'exclusive-lock': 'EL',
  'object-map': 'OM',
  'fast-diff': 'FD',
  'deep-flatten': 'DF',
  journaling: 'J',
  'data-pool': 'DP',
  operations: 'OP',
  migrating: 'MG',
  'non-primary': 'NP',
};

type Column =
  | 'expand'
  | 'pool'
  | 'namespace'
  | 'size'
  | 'status'
  | 'snaps'
  | 'features'
  | 'objects'
  | 'provisioned'
  | 'parent'
  | 'actions';

/**
 * Fixed column widths (rem), so columns do not jump as pages and data change; the name takes the rest. Sized for
 * typical values ("524,288 × 4 MiB", "500 GiB / 487.31 GiB", "rbd/vm-101-disk-0@base", five feature codes); longer
 * ones are cut with the full value in a tooltip. When the window is too narrow to leave the name NAME_MIN, the least
 * important columns are left out (`drop`, lowest first): their values are in the expanded row's Details.
 */
const COLUMNS: ColumnSpec<Column>[] = [
  { key: 'expand', width: 2 },
  { key: 'pool', width: 5, drop: 7 },
  { key: 'namespace', width: 7, drop: 6 },
  { key: 'size', width: 5.5 },
  { key: 'status', width: 6.5 },
  { key: 'snaps', width: 3.75, drop: 3 },
  { key: 'features', width: 9, drop: 2 },
  { key: 'objects', width: 8.5, drop: 1 },
  { key: 'provisioned', width: 10, drop: 4 },
  { key: 'parent', width: 12, drop: 5 },
  { key: 'actions', width: 2.75 },
];
/** The least room (rem) the name column keeps: about 20 characters of a bold name (longer ones wrap). */
const NAME_MIN = 11.5;

/** The columns that fit the table's frame, remeasured as the window changes. */
function useFittingColumns(withActions: boolean): { frame: Ref<HTMLDivElement>; shown: Set<Column> } {
  const frame = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(0);
  useLayoutEffect(() => {
    const el = frame.current;
    if (!el) return;
    setWidth(el.clientWidth);
    if (typeof ResizeObserver === 'undefined') return;
    const observer = new ResizeObserver(() => setWidth(el.clientWidth));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const columns = withActions ? COLUMNS : COLUMNS.filter((c) => c.key !== 'actions');
  const rem =
    typeof window === 'undefined' ? 14 : parseFloat(getComputedStyle(document.documentElement).fontSize) || 14;
  return { frame, shown: fittingColumns(columns, width, rem, NAME_MIN) };
}

function RowStatus({ image, task, now }: { image: ImageObject; task: Task | undefined; now: number }) {
  const badge = <StatusBadge image={image} />;
  // A degraded image says so even while a task runs on it.
  if (!task || image.status === 'degraded') return badge;
  const p = taskProgress(task, now);
  return (
    <span class="row-task" title={`${task.name}: ${p.text}`}>
      <progress max={100} value={p.percent} aria-label={`${p.verb} ${specOf(image)}`} />
      <span class="row-task-text">
        {p.percent}%{p.etaSeconds !== null ? ` · ${formatDuration(p.etaSeconds)}` : ''}
      </span>
      <span class="sr-only">{p.text}</span>
    </span>
  );
}

const SORTABLE: { key: SortKey; label: string }[] = [
  { key: 'name', label: 'Name' },
  { key: 'pool_name', label: 'Pool' },
  { key: 'namespace', label: 'Namespace' },
  { key: 'size', label: 'Size' },
];

function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

export function ImagesTab({ pools }: { pools: PoolState }) {
  const { can } = useSession();
  const executing = useStore(tasks).executing;
  // Arriving from the Overall Performance tab: find that image and open its Performance tab.
  const [drill] = useState(takeDrill);
  const [searchText, setSearchText] = useState(drill ? imageNameOf(drill) : '');
  const search = useDebounced(searchText, 300);
  const [sort, setSort] = useState<ImageListQuery['sort']>('+name');
  const [limit, setLimit] = useState(25);
  const [offset, setOffset] = useState(0);
  const [expanded, setExpanded] = useState<Set<string>>(() => new Set(drill ? [drill] : []));
  const [refresh, setRefresh] = useState(0);
  const [dialog, setDialog] = useState<ImageDialog | null>(null);
  // The seed's next step after Create Image: how to attach the new image.
  const [created, setCreated] = useState<string | null>(null);

  const list = useLoad(() => api.listImages({ offset, limit, search, sort }), [offset, limit, search, sort, refresh]);
  const reload = () => setRefresh((n) => n + 1);
  useEffect(() => onTaskEnded(() => setRefresh((n) => n + 1)), []);
  useEffect(() => setOffset(0), [search, limit, sort]);

  const top = useRef<HTMLDivElement>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => setNow(Date.now()), [executing]);
  const goTo = (next: number) => {
    setOffset(next);
    top.current?.scrollIntoView({ block: 'start' });
  };
  // The last image of the last page went away (deleted, trashed): show the page before.
  useEffect(() => {
    if (list.data && list.data.items.length === 0 && offset > 0) setOffset(Math.max(0, offset - limit));
  }, [list.data]);
  const noPool = pools.names !== null && pools.names.length === 0;
  const createReason = noPool ? 'Disabled: no healthy pool is tagged rbd (see Storage › Pools).' : null;

  const toggleSort = (key: SortKey) => setSort(sort === `+${key}` ? `-${key}` : `+${key}`);
  const toggleRow = (spec: string) => {
    const next = new Set(expanded);
    if (next.has(spec)) next.delete(spec);
    else next.add(spec);
    setExpanded(next);
  };

  const actionsFor = (image: ImageObject): MenuAction[] => {
    const open = (kind: ImageDialog['kind']) => () => setDialog({ kind, image } as ImageDialog);
    const busy = busyReason(image, executing);
    const all: (MenuAction & { allowed: boolean })[] = [
      { label: 'Edit', onSelect: open('edit'), disabledReason: busy, allowed: can(EP.editImage) },
      { label: 'Copy', onSelect: open('copy'), disabledReason: busy, allowed: can(EP.copyImage) },
      { label: 'Create Snapshot', onSelect: open('snapshot'), disabledReason: busy, allowed: can(EP.createSnapshot) },
      {
        label: 'Flatten',
        onSelect: open('flatten'),
        disabledReason: flattenBlockedReason(image, executing),
        allowed: can(EP.flatten),
      },
      {
        label: 'Move to Trash',
        onSelect: open('trash'),
        disabledReason: trashBlockedReason(image, executing),
        allowed: can(EP.moveTrash),
      },
      {
        label: 'Delete',
        danger: true,
        onSelect: open('delete'),
        disabledReason: deleteBlockedReason(image, executing),
        allowed: can(EP.deleteImage),
      },
    ];
    return all.filter((a) => a.allowed);
  };
  const anyActions = [EP.editImage, EP.copyImage, EP.createSnapshot, EP.flatten, EP.moveTrash, EP.deleteImage].some(
    can,
  );
  const { frame, shown } = useFittingColumns(anyActions);
  // Every shown column plus the name.
  const span = shown.size + 1;

  return (
    <div class="tab-content" ref={top}>
      <div class="toolbar">
        {can(EP.createImage) && (
          <div class="create-wrap">
            <button
              type="button"
              class="primary"
              disabled={createReason !== null}
              aria-describedby={createReason ? 'create-reason' : undefined}
              onClick={() => setDialog({ kind: 'create' })}
            >
              + Create Image
            </button>
            {createReason && (
              <span id="create-reason" class="reason">
                {createReason}
              </span>
            )}
          </div>
        )}
        {!can(EP.createImage) && (
          <span class="reason">
            Your role cannot create images, so + Create Image is hidden: ask an administrator for the block-manager
            role.
          </span>
        )}
        <span class="spacer" />
        <label class="inline-label">
          Search
          <input
            type="search"
            value={searchText}
            placeholder="name, pool or namespace"
            onInput={(e) => setSearchText(e.currentTarget.value)}
          />
        </label>
        <button type="button" onClick={reload} aria-label="Refresh the image list">
          ⟳ Refresh
        </button>
      </div>
      <LoadState what="images" loaded={list} loadingInTable />
      {created && (
        <div class="connect-created">
          <ConnectPanel spec={created} />
          <button type="button" onClick={() => setCreated(null)}>
            Hide connection details
          </button>
        </div>
      )}
      <div class="table-wrap" ref={frame}>
        <table
          class="table images-table"
          style={{ minWidth: `${fixedWidth(COLUMNS, shown) + NAME_MIN / 2}rem` }}
          aria-busy={list.loading}
        >
          <caption class="sr-only">Block images</caption>
          <colgroup>
            <col style={{ width: '2rem' }} />
            <col />
            {COLUMNS.filter((c) => c.key !== 'expand' && shown.has(c.key)).map((c) => (
              <col key={c.key} style={{ width: `${c.width}rem` }} />
            ))}
          </colgroup>
          <thead>
            <tr>
              <th scope="col">
                <span class="sr-only">Expand</span>
              </th>
              {SORTABLE.filter(({ key }) => key === 'name' || shown.has(key === 'pool_name' ? 'pool' : key)).map(
                ({ key, label }) => (
                  <th
                    key={key}
                    scope="col"
                    aria-sort={sort === `+${key}` ? 'ascending' : sort === `-${key}` ? 'descending' : 'none'}
                  >
                    <button type="button" class="sort" onClick={() => toggleSort(key)}>
                      {label}
                      <span aria-hidden="true">{sort === `+${key}` ? ' ▲' : sort === `-${key}` ? ' ▼' : ''}</span>
                    </button>
                  </th>
                ),
              )}
              <th scope="col">Status</th>
              {shown.has('snaps') && (
                <th scope="col">
                  <abbr title="Snapshots">Snaps</abbr>
                </th>
              )}
              {shown.has('features') && <th scope="col">Features</th>}
              {shown.has('objects') && <th scope="col">Objects × Size</th>}
              {shown.has('provisioned') && <th scope="col">Provisioned / Used</th>}
              {shown.has('parent') && <th scope="col">Parent</th>}
              {anyActions && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {list.data === undefined && (
              <tr>
                <td colSpan={span} class="empty loading-row" aria-busy="true">
                  {list.error ? 'The image list could not be loaded.' : 'Loading images…'}
                </td>
              </tr>
            )}
            {list.data?.items.length === 0 && (
              <tr>
                <td colSpan={span} class="empty">
                  {search ? `No image matches “${search}”.` : 'No images yet.'}
                </td>
              </tr>
            )}
            {list.data?.items.map((image) => {
              const spec = specOf(image);
              const open = expanded.has(spec);
              const parent = image.parent
                ? `${image.parent.pool_name}/${image.parent.image_name}@${image.parent.snap_name}`
                : undefined;
              const provisioned = `${formatBytes(image.size)} / ${
                image.size === null ? UNKNOWN : image.disk_usage === null ? 'n/a' : formatBytes(image.disk_usage)
              }`;
              return (
                <Fragment key={spec}>
                  <tr class={open ? 'row-open' : undefined}>
                    <td>
                      <button
                        type="button"
                        class="icon-button chevron"
                        aria-expanded={open}
                        aria-controls={`detail-${image.unique_id}`}
                        aria-label={`Details of ${spec}`}
                        onClick={() => toggleRow(spec)}
                      >
                        {open ? '▾' : '▸'}
                      </button>
                    </td>
                    <th scope="row" class="name-cell" title={spec}>
                      {image.name}
                      {!shown.has('pool') && (
                        // Pool and namespace have no column here: the chevron's name and the tooltip say them too.
                        <span class="name-where" aria-hidden="true">
                          {image.pool_name}
                          {image.namespace ? `/${image.namespace}` : ''}
                        </span>
                      )}
                    </th>
                    {shown.has('pool') && <td title={image.pool_name}>{image.pool_name}</td>}
                    {shown.has('namespace') && (
                      <td title={image.namespace ?? undefined}>
                        {image.namespace ?? <span class="muted">default</span>}
                      </td>
                    )}
                    <td title={image.size === null ? undefined : `${image.size.toLocaleString('en-US')} bytes`}>
                      {formatBytes(image.size)}
                    </td>
                    <td>
                      <RowStatus image={image} task={runningTaskOn(image, executing)} now={now} />
                    </td>
                    {shown.has('snaps') && <td>{image.snapshot_count ?? UNKNOWN}</td>}
                    {shown.has('features') && (
                      <td class="features-cell" title={image.features_name.join(', ') || 'no features'}>
                        <span class="sr-only">{image.features_name.join(', ') || 'none'}</span>
                        <span aria-hidden="true">
                          {image.features_name.map((f) => (
                            <abbr class="tag" key={f}>
                              {FEATURE_CODES[f] ?? f}
                            </abbr>
                          ))}
                        </span>
                      </td>
                    )}
                    {shown.has('objects') &&
                      (image.num_objs === null ? (
                        <td>{UNKNOWN}</td>
                      ) : (
                        <td
                          title={`${image.num_objs} objects of ${formatBytes(image.obj_size)}, format ${image.image_format}`}
                        >
                          {image.num_objs.toLocaleString('en-US')} × {formatBytes(image.obj_size)}
                        </td>
                      ))}
                    {shown.has('provisioned') && (
                      <td
                        title={
                          image.size !== null && image.disk_usage === null
                            ? `${provisioned} (used needs fast-diff)`
                            : provisioned
                        }
                      >
                        {provisioned}
                      </td>
                    )}
                    {shown.has('parent') && (
                      <td class="clip" title={parent}>
                        {parent ?? <span class="muted">-</span>}
                      </td>
                    )}
                    {anyActions && (
                      <td class="actions-cell">
                        <ActionMenu subject={spec} actions={actionsFor(image)} />
                      </td>
                    )}
                  </tr>
                  {open && (
                    <tr class="detail-row" id={`detail-${image.unique_id}`}>
                      <td colSpan={span}>
                        <ImageExpanded
                          initial={image}
                          refresh={refresh}
                          pools={pools}
                          onChanged={reload}
                          initialTab={spec === drill ? 'performance' : undefined}
                        />
                      </td>
                    </tr>
                  )}
                </Fragment>
              );
            })}
          </tbody>
        </table>
      </div>
      <Pager
        offset={offset}
        limit={limit}
        shown={list.data?.items.length ?? 0}
        total={list.data?.total}
        noun="image"
        sizes={PAGE_SIZES}
        onOffset={goTo}
        onLimit={setLimit}
      />
      {dialog && (
        <ImageDialogs
          dialog={dialog}
          pools={pools}
          onClose={() => setDialog(null)}
          onDone={reload}
          onCreated={setCreated}
        />
      )}
    </div>
  );
}
