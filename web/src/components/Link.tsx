// An in-app link: a real <a href> (keyboard, middle-click) that changes the route without reloading.

import type { ComponentChildren } from 'preact';
import { navigate } from '../router';

interface Props {
  href: string;
  children: ComponentChildren;
  class?: string;
  current?: boolean;
  onNavigate?: () => void;
}

export function Link({ href, children, class: className, current, onNavigate }: Props) {
  return (
    <a
      href={href}
      class={className}
      aria-current={current ? 'page' : undefined}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(href);
        onNavigate?.();
      }}
    >
      {children}
    </a>
  );
}
