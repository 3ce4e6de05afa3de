// A modal dialog on the native <dialog> element: focus stays inside, Escape closes, the title labels it.

import type { ComponentChildren } from 'preact';
import { useId, useLayoutEffect, useRef } from 'preact/hooks';

interface Props {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  wide?: boolean;
}

export function Dialog({ title, onClose, children, wide }: Props) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  // A layout effect runs in the same task as the render, so a key pressed right after the click that opened the
  // dialog already lands in its first field (a plain effect runs after paint, and such keys were lost).
  useLayoutEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    const opener = document.activeElement as HTMLElement | null;
    dialog.showModal();
    // Focus the first field, so typing goes there at once (not to the close button the browser would pick).
    const first = dialog.querySelector<HTMLElement>(
      '.dialog-body input:not([disabled]):not([type="hidden"]), .dialog-body select:not([disabled]), .dialog-body textarea:not([disabled])',
    );
    first?.focus();
    return () => opener?.focus?.();
  }, []);
  return (
    <dialog
      ref={ref}
      class={wide ? 'dialog dialog-wide' : 'dialog'}
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <header class="dialog-head">
        <h2 id={titleId}>{title}</h2>
        <button type="button" class="icon-button" aria-label="Close" onClick={onClose}>
          ×
        </button>
      </header>
      {children}
    </dialog>
  );
}
