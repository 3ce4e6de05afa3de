import type { ImageObject } from '../../api/types';

/** The image's status as a badge; the reason, when it is not OK, as its tooltip and for screen readers. */
export function StatusBadge({ image }: { image: ImageObject }) {
  const kind = image.status === 'OK' ? 'badge-ok' : image.status === 'degraded' ? 'badge-err' : 'badge-warn';
  const detail = image.status_detail ?? undefined;
  return (
    <span class={`badge ${kind}`} title={detail} data-testid="image-status">
      {image.status}
      {detail && <span class="sr-only">: {detail}</span>}
    </span>
  );
}
