// Component tests of a list's loading and error states: before its data arrives the pager claims no count ("No images"
// would read as empty), "Loading …" is said once when the table says it, and a first-load error says what to do.
import { render } from 'preact';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError } from '../api/client';
import { LoadState } from './LoadState';
import { Pager } from './Pager';
import type { Loaded } from './useLoad';

let root: HTMLDivElement;

beforeEach(() => {
  root = document.createElement('div');
  document.body.append(root);
});

afterEach(() => {
  render(null, root);
  root.remove();
});

const loading: Loaded<number[]> = { data: undefined, error: null, loading: true, reload: () => {} };

function pager(total: number | undefined) {
  render(
    <Pager
      offset={0}
      limit={25}
      shown={0}
      total={total}
      noun="image"
      sizes={[25]}
      onOffset={() => {}}
      onLimit={() => {}}
    />,
    root,
  );
}

describe('Pager', () => {
  it('shows nothing before the list has loaded, and "No images" only once it is known to be empty', () => {
    pager(undefined);
    expect(root.textContent).toBe('');
    pager(0);
    expect(root.querySelector('[role="status"]')?.textContent).toBe('No images');
  });
});

describe('LoadState', () => {
  it('says "Loading …" unless the table already says it', () => {
    render(<LoadState what="images" loaded={loading} />, root);
    expect(root.textContent).toBe('Loading images…');
    render(<LoadState what="images" loaded={loading} loadingInTable />, root);
    expect(root.textContent).toBe('');
  });
  it('tells what to do when the first load fails', () => {
    const error = new ApiError(500, 'EIO', 'simulated failure');
    render(<LoadState what="images" loaded={{ ...loading, loading: false, error }} loadingInTable />, root);
    expect(root.textContent).toContain('simulated failure');
    expect(root.textContent).toContain('What to do: Refresh to try again');
  });
});
