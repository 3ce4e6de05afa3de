// Drilling from the Overall Performance tab into one image: the Images tab opens with that image found, its row
// expanded on the Performance tab.

import { navigate, ROUTES } from '../../router';
import { createStore } from '../../state/store';

const pending = createStore<string | null>(null);

/** Opens the Images tab on `spec`'s Performance tab. */
export function drillInto(spec: string): void {
  pending.set(spec);
  navigate(ROUTES.images);
}

/** The image a drill asked for, once: the Images tab takes it when it mounts. */
export function takeDrill(): string | null {
  const spec = pending.get();
  pending.set(null);
  return spec;
}

/** The image name of `pool/image` or `pool/namespace/image`. */
export function imageNameOf(spec: string): string {
  return spec.slice(spec.lastIndexOf('/') + 1);
}
