// Tips, warnings and notes from the seed, set apart from the form text; warnings are announced as notes, not alerts.

import type { ComponentChildren } from 'preact';

interface Props {
  kind: 'tip' | 'warning' | 'info';
  children: ComponentChildren;
}

const LABEL = { tip: 'Tip', warning: 'Warning', info: 'Note' } as const;

export function Callout({ kind, children }: Props) {
  return (
    <div class={`callout callout-${kind}`} role="note">
      <strong>{LABEL[kind]}: </strong>
      {children}
    </div>
  );
}
