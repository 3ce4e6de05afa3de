// A row's "..." menu: a button that opens a list of actions; unavailable actions stay listed, disabled, with the
// reason beside them. Arrow keys move, Escape closes and returns focus to the button.

import { useId, useLayoutEffect, useRef, useState } from 'preact/hooks';

export interface MenuAction {
  label: string;
  onSelect: () => void;
  /** Why the action is unavailable now; null or absent when it is available. */
  disabledReason?: string | null;
  danger?: boolean;
}

interface Props {
  /** Names the row, e.g. "rbd/vm1", for the button's accessible name. */
  subject: string;
  actions: MenuAction[];
}

export function ActionMenu({ subject, actions }: Props) {
  const [open, setOpen] = useState(false);
  const [place, setPlace] = useState({ top: 0, right: 0 });
  const button = useRef<HTMLButtonElement>(null);
  const menu = useRef<HTMLDivElement>(null);
  const menuId = useId();

  // A layout effect: the listeners must be in place as soon as the menu is visible.
  useLayoutEffect(() => {
    if (!open) return;
    const first = menu.current?.querySelector<HTMLButtonElement>('button:not([disabled])');
    first?.focus();
    const close = (e: Event) => {
      if (!menu.current?.contains(e.target as Node) && !button.current?.contains(e.target as Node)) setOpen(false);
    };
    const closeOnResize = () => setOpen(false);
    // Escape closes wherever the focus is (it may still be on the button while the menu opens).
    const escape = (e: KeyboardEvent) => {
      if (e.key !== 'Escape') return;
      e.preventDefault();
      setOpen(false);
      button.current?.focus();
    };
    document.addEventListener('pointerdown', close);
    document.addEventListener('keydown', escape);
    window.addEventListener('resize', closeOnResize);
    return () => {
      document.removeEventListener('pointerdown', close);
      document.removeEventListener('keydown', escape);
      window.removeEventListener('resize', closeOnResize);
    };
  }, [open]);

  if (actions.length === 0) return null;

  const toggle = () => {
    const rect = button.current?.getBoundingClientRect();
    if (rect) setPlace({ top: rect.bottom + 4, right: Math.max(8, window.innerWidth - rect.right) });
    setOpen(!open);
  };

  const onKey = (e: KeyboardEvent) => {
    const items = [...(menu.current?.querySelectorAll<HTMLButtonElement>('button:not([disabled])') ?? [])];
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const step = e.key === 'ArrowDown' ? 1 : -1;
      items[(at + step + items.length) % items.length]?.focus();
    } else if (e.key === 'Tab') {
      setOpen(false);
    }
  };

  return (
    <div class="action-menu">
      <button
        ref={button}
        type="button"
        class="icon-button"
        aria-label={`Actions for ${subject}`}
        aria-haspopup="menu"
        aria-expanded={open}
        aria-controls={open ? menuId : undefined}
        onClick={toggle}
      >
        ⋯
      </button>
      {open && (
        <div
          ref={menu}
          id={menuId}
          role="menu"
          aria-label={`Actions for ${subject}`}
          class="menu"
          style={{ top: `${place.top}px`, right: `${place.right}px` }}
          onKeyDown={onKey}
        >
          {actions.map((a) => (
            <button
              key={a.label}
              type="button"
              role="menuitem"
              class={a.danger ? 'menu-item danger-text' : 'menu-item'}
              disabled={Boolean(a.disabledReason)}
              title={a.disabledReason ?? undefined}
              onClick={() => {
                setOpen(false);
                // Focus returns to the row's button, so a dialog the action opens gives it back on close.
                button.current?.focus();
                a.onSelect();
              }}
            >
              <span>{a.label}</span>
              {a.disabledReason && <span class="menu-reason">{a.disabledReason}</span>}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
