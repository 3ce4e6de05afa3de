// A numbered pager: the range shown ("26–50 of 69 images"), page sizes, Previous/Next and the page numbers. Before the
// first page has loaded (or when it failed) there is nothing to count, so it shows nothing rather than "No images".

import { pageNumbers, rangeText } from '../lib/pages';

interface Props {
  offset: number;
  limit: number;
  /** Rows on this page. */
  shown: number;
  /** Undefined until the list has loaded. */
  total: number | undefined;
  noun: string;
  sizes: readonly number[];
  onOffset: (offset: number) => void;
  onLimit: (limit: number) => void;
}

export function Pager({ offset, limit, shown, total, noun, sizes, onOffset, onLimit }: Props) {
  if (total === undefined) return null;
  const count = Math.max(1, Math.ceil(total / limit));
  const current = Math.floor(offset / limit) + 1;
  return (
    <nav class="pager" aria-label={`Pages of ${noun}s`}>
      <span role="status">{rangeText(offset, shown, total, noun)}</span>
      <label class="inline-label">
        Rows per page
        <select value={limit} onChange={(e) => onLimit(Number(e.currentTarget.value))}>
          {sizes.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </label>
      <button type="button" disabled={current <= 1} onClick={() => onOffset(Math.max(0, offset - limit))}>
        Previous page
      </button>
      {pageNumbers(current, count).map((p, i) =>
        p === null ? (
          <span key={`gap-${i}`} class="pager-gap" aria-hidden="true">
            …
          </span>
        ) : (
          <button
            key={p}
            type="button"
            class={p === current ? 'page-number page-current' : 'page-number'}
            aria-current={p === current ? 'page' : undefined}
            aria-label={`Page ${p}`}
            onClick={() => onOffset((p - 1) * limit)}
          >
            {p}
          </button>
        ),
      )}
      <button type="button" disabled={current >= count} onClick={() => onOffset(offset + limit)}>
        Next page
      </button>
    </nav>
  );
}
