// Accessible tabs (tablist, tab, tabpanel): arrow keys move between tabs, only the chosen panel is rendered.

import type { ComponentChildren } from 'preact';
import { useId, useRef } from 'preact/hooks';

export interface TabDef {
  id: string;
  label: string;
}

interface Props {
  label: string;
  tabs: TabDef[];
  selected: string;
  onSelect: (id: string) => void;
  children: ComponentChildren;
}

export function Tabs({ label, tabs, selected, onSelect, children }: Props) {
  const base = useId();
  const list = useRef<HTMLDivElement>(null);
  const onKey = (e: KeyboardEvent) => {
    const at = tabs.findIndex((t) => t.id === selected);
    const step = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (step === 0) return;
    e.preventDefault();
    const next = tabs[(at + step + tabs.length) % tabs.length];
    if (!next) return;
    onSelect(next.id);
    list.current?.querySelector<HTMLButtonElement>(`#${CSS.escape(`${base}-tab-${next.id}`)}`)?.focus();
  };
  return (
    <div class="tabs">
      <div role="tablist" aria-label={label} class="tablist" ref={list} onKeyDown={onKey}>
        {tabs.map((t) => (
          <button
            key={t.id}
            type="button"
            role="tab"
            id={`${base}-tab-${t.id}`}
            aria-selected={t.id === selected}
            aria-controls={`${base}-panel`}
            tabIndex={t.id === selected ? 0 : -1}
            class="tab"
            onClick={() => onSelect(t.id)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`${base}-panel`} aria-labelledby={`${base}-tab-${selected}`} class="tabpanel">
        {children}
      </div>
    </div>
  );
}
