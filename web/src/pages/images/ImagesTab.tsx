// The Images tab: the server-paged, searchable, sortable table of images, + Create Image, row actions and expandable
// rows; rows refresh by themselves when a background task ends.

import { Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api } from '../../api/client';
import { EP } from '../../api/endpoints';
import type { ImageListQuery, ImageObject, SortKey } from '../../api/types';
import { ActionMenu, type MenuAction } from '../../components/ActionMenu';
import { ErrorText } from '../../components/ErrorText';
import { useLoad } from '../../components/useLoad';
import {
  busyReason,
  deleteBlockedReason,
  flattenBlockedReason,
  specOf,
  trashBlockedReason,
} from '../../lib/imageRules';
import { formatBytes } from '../../lib/units';
import { useSession } from '../../state/session';
import { useStore } from '../../state/store';
import { onTaskEnded, tasks } from '../../state/tasks';
import type { PoolState } from './BlockImagesPage';
import { imageNameOf, takeDrill } from './drill';
import { ImageDialogs, type ImageDialog } from './ImageDialogs';
import { ImageExpanded } from './ImageExpanded';

const PAGE_SIZES = [10, 25, 50];
const COLUMNS = 14;

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
  const [limit, setLimit] = useState(10);
  const [offset, setOffset] = useState(0);
  const [expanded, setExpanded] = useState<Set<string>>(() => new Set(drill ? [drill] : []));
  const [refresh, setRefresh] = useState(0);
  const [dialog, setDialog] = useState<ImageDialog | null>(null);

  const list = useLoad(() => api.listImages({ offset, limit, search, sort }), [offset, limit, search, sort, refresh]);
  const reload = () => setRefresh((n) => n + 1);
  useEffect(() => onTaskEnded(() => setRefresh((n) => n + 1)), []);
  useEffect(() => setOffset(0), [search, limit, sort]);

  const total = list.data?.total ?? 0;
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

  return (
    <div class="tab-content">
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
        <label class="inline-label">
          Rows
          <select value={limit} onChange={(e) => setLimit(Number(e.currentTarget.value))}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={reload} aria-label="Refresh the image list">
          ⟳ Refresh
        </button>
      </div>
      <ErrorText error={list.error} />
      <div class="table-wrap">
        <table class="table images-table" aria-busy={list.loading}>
          <caption class="sr-only">Block images</caption>
          <thead>
            <tr>
              <th scope="col">
                <span class="sr-only">Expand</span>
              </th>
              {SORTABLE.map(({ key, label }) => (
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
              ))}
              <th scope="col">Status</th>
              <th scope="col">Snapshots</th>
              <th scope="col">Features</th>
              <th scope="col">Format</th>
              <th scope="col">Objects</th>
              <th scope="col">Object Size</th>
              <th scope="col">Provisioned/Used</th>
              <th scope="col">Parent</th>
              {anyActions && (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {list.data?.items.length === 0 && (
              <tr>
                <td colSpan={COLUMNS} class="empty">
                  {search ? `No image matches “${search}”.` : 'No images yet.'}
                </td>
              </tr>
            )}
            {list.data?.items.map((image) => {
              const spec = specOf(image);
              const open = expanded.has(spec);
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
                    <th scope="row" class="name-cell">
                      {image.name}
                    </th>
                    <td>{image.pool_name}</td>
                    <td>{image.namespace ?? <span class="muted">default</span>}</td>
                    <td>{formatBytes(image.size)}</td>
                    <td>
                      <span class={image.status === 'OK' ? 'badge badge-ok' : 'badge badge-warn'}>{image.status}</span>
                    </td>
                    <td>{image.snapshot_count}</td>
                    <td class="features-cell">
                      {image.features_name.map((f) => (
                        <span class="tag" key={f}>
                          {f}
                        </span>
                      ))}
                    </td>
                    <td>{image.image_format}</td>
                    <td>{image.num_objs}</td>
                    <td>{formatBytes(image.obj_size)}</td>
                    <td>
                      {formatBytes(image.size)} /{' '}
                      {image.disk_usage === null ? (
                        <span title="Needs fast-diff">n/a</span>
                      ) : (
                        formatBytes(image.disk_usage)
                      )}
                    </td>
                    <td>
                      {image.parent ? (
                        `${image.parent.pool_name}/${image.parent.image_name}@${image.parent.snap_name}`
                      ) : (
                        <span class="muted">-</span>
                      )}
                    </td>
                    {anyActions && (
                      <td class="actions-cell">
                        <ActionMenu subject={spec} actions={actionsFor(image)} />
                      </td>
                    )}
                  </tr>
                  {open && (
                    <tr class="detail-row" id={`detail-${image.unique_id}`}>
                      <td colSpan={COLUMNS}>
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
      <div class="pager">
        <span role="status">
          {total === 0 ? '0 images' : `${offset + 1}–${Math.min(offset + limit, total)} of ${total} images`}
        </span>
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - limit))}>
          Previous page
        </button>
        <button type="button" disabled={offset + limit >= total} onClick={() => setOffset(offset + limit)}>
          Next page
        </button>
      </div>
      {dialog && <ImageDialogs dialog={dialog} pools={pools} onClose={() => setDialog(null)} onDone={reload} />}
    </div>
  );
}
