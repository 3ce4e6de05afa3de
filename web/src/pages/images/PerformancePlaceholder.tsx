// The Performance tabs before the data path exists: says honestly that there are no figures yet, and why.

import type { ComponentChildren } from 'preact';

interface Props {
  /** What the charts would cover: "all RBD images" or an image spec. */
  scope: string;
  children?: ComponentChildren;
}

export function PerformancePlaceholder({ scope, children }: Props) {
  return (
    <div class="placeholder" role="status">
      <h3>Performance figures arrive with the data path</h3>
      <p>
        basalt does not serve images to clients yet (the NBD data path is still being built), so there is no I/O to
        measure and nothing is charted: no read/write IOPS, throughput or latency for {scope}. This tab shows those
        charts once the data path records them; it never shows made-up figures.
      </p>
      {children}
    </div>
  );
}
