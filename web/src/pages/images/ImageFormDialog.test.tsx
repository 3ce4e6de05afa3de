// Component test of the Create RBD Image panel: the feature checkboxes follow their dependencies, and submitting
// with empty required fields shows the inline errors and the seed's warning instead of calling the server.
import { render } from 'preact';
import { act } from 'preact/test-utils';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ImageFormDialog } from './ImageFormDialog';

let root: HTMLDivElement;

function mount() {
  root = document.createElement('div');
  document.body.append(root);
  const fetch = vi.fn(async (_url: string, _init: RequestInit) => new Response('[]', { status: 200 }));
  vi.stubGlobal('fetch', fetch);
  act(() => {
    render(
      <ImageFormDialog image={null} pools={{ names: ['rbd'], ready: true }} onClose={() => {}} onDone={() => {}} />,
      root,
    );
  });
  return fetch;
}

const box = (name: string) => root.querySelector<HTMLInputElement>(`input[name="features"][value="${name}"]`)!;

function click(element: HTMLElement) {
  act(() => element.click());
}

afterEach(() => {
  render(null, root);
  root.remove();
  vi.unstubAllGlobals();
});

describe('Create RBD Image panel', () => {
  it('clears and disables dependent features when their requirement is unchecked, and restores them', () => {
    mount();
    expect(box('object-map').checked).toBe(true);
    click(box('exclusive-lock'));
    expect(box('object-map').checked).toBe(false);
    expect(box('fast-diff').checked).toBe(false);
    expect(box('object-map').disabled).toBe(true);
    expect(root.textContent).toContain('Needs exclusive-lock.');
    // Ticking exclusive-lock again brings back what unticking it cleared.
    click(box('exclusive-lock'));
    expect(box('object-map').checked).toBe(true);
    expect(box('fast-diff').checked).toBe(true);
  });

  it('focuses the first field when it opens', () => {
    mount();
    expect(document.activeElement?.getAttribute('autocomplete')).toBe('off');
    expect((document.activeElement as HTMLInputElement | null)?.closest('.field')?.textContent).toContain('Name');
  });

  it('refuses to submit with an empty name and size, saying why', () => {
    const fetch = mount();
    expect(root.textContent).toContain('If required fields (Name * or Pool *) are empty, image creation fails.');
    const submit = [...root.querySelectorAll('button')].find((b) => b.textContent === 'Create Image')!;
    click(submit);
    expect(root.textContent).toContain('Name * is required.');
    expect(root.textContent).toContain('Size is required.');
    // Only the namespace list of the pool was read: nothing was sent.
    expect(fetch.mock.calls.every(([, init]) => init.method === 'GET')).toBe(true);
  });

  it('enables the stripe fields only with the striping feature', () => {
    mount();
    const count = root.querySelector<HTMLInputElement>('input[inputmode="numeric"]')!;
    expect(count.disabled).toBe(true);
    click(box('striping'));
    expect(count.disabled).toBe(false);
  });
});
