// The Details tab: identity, layout, features, parent, times and usage of one image.

import type { ComponentChildren } from 'preact';
import type { ImageObject } from '../../api/types';
import { Callout } from '../../components/Callout';
import { specOf } from '../../lib/imageRules';
import { formatTime } from '../../lib/time';
import { formatBytes, UNKNOWN } from '../../lib/units';
import { ConnectPanel } from './ConnectPanel';
import { StatusBadge } from './StatusBadge';

function Item({ term, children }: { term: string; children: ComponentChildren }) {
  return (
    <div class="dl-item">
      <dt>{term}</dt>
      <dd>{children}</dd>
    </div>
  );
}

export function DetailsTab({ image }: { image: ImageObject }) {
  const parent = image.parent;
  const parentSpec = parent
    ? `${parent.pool_name}/${parent.pool_namespace ? `${parent.pool_namespace}/` : ''}${parent.image_name}@${parent.snap_name}`
    : null;
  const usage = (bytes: number | null) => (bytes === null ? 'n/a (needs fast-diff)' : formatBytes(bytes));
  return (
    <div>
      <Callout kind="tip">
        Check Parent first. If populated, plan clone/flatten operations before parent cleanup.
      </Callout>
      <dl class="details">
        <Item term="Parent">
          {parentSpec ? (
            <>
              <strong>{parentSpec}</strong> (overlap {formatBytes(parent?.overlap ?? 0)}
              {parent?.in_trash ? ', parent in trash' : ''})
            </>
          ) : (
            'None: standalone image'
          )}
        </Item>
        <Item term="Name">{image.name}</Item>
        <Item term="Pool">{image.pool_name}</Item>
        <Item term="Namespace">{image.namespace ?? 'default'}</Item>
        <Item term="Image ID">{image.id}</Item>
        <Item term="Block name prefix">{image.block_name_prefix ?? UNKNOWN}</Item>
        <Item term="Status">
          <StatusBadge image={image} />
          {image.status_detail && <span class="status-detail"> {image.status_detail}</span>}
        </Item>
        <Item term="Format">{image.image_format}</Item>
        <Item term="Size">{formatBytes(image.size)}</Item>
        <Item term="Objects">
          {image.num_objs === null
            ? UNKNOWN
            : `${image.num_objs} × ${formatBytes(image.obj_size)} (order ${image.order})`}
        </Item>
        <Item term="Stripe unit">{formatBytes(image.stripe_unit)}</Item>
        <Item term="Stripe count">{image.stripe_count ?? UNKNOWN}</Item>
        <Item term="Data pool">{image.data_pool ?? 'same pool'}</Item>
        <Item term="Features">{image.features_name.join(', ') || 'none'}</Item>
        <Item term="Created">{formatTime(image.timestamp)}</Item>
        <Item term="Last modified">{formatTime(image.modify_timestamp)}</Item>
        <Item term="Provisioned">{formatBytes(image.size)}</Item>
        <Item term="Used (image)">{usage(image.disk_usage)}</Item>
        <Item term="Used (with snapshots)">{usage(image.total_disk_usage)}</Item>
        <Item term="Snapshots">
          {image.snapshot_count ?? UNKNOWN}
          {image.snap_limit !== null ? ` (limit ${image.snap_limit})` : ''}
        </Item>
        <Item term="Attached clients">
          {image.watchers.length === 0
            ? 'none'
            : image.watchers.map((w) => `${w.client}${w.writable ? ' (read/write)' : ''}`).join(', ')}
        </Item>
      </dl>
      <ConnectPanel spec={specOf(image)} collapsed />
    </div>
  );
}
