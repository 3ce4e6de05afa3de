// The Connect panel: how to attach an image (or a snapshot, read-only) to a VM or a host, from the server's
// /connection answer, each line with a Copy button, the credentials it needs and the seed's warning about attaching
// one image read-write to several workloads.

import { useState } from 'preact/hooks';
import { api } from '../../api/client';
import type { ConnectionInfo } from '../../api/types';
import { Callout } from '../../components/Callout';
import { Dialog } from '../../components/Dialog';
import { ErrorText } from '../../components/ErrorText';
import { useLoad } from '../../components/useLoad';

/** The lines of the panel, in the order a user needs them: VM path, host path, then the bare URIs. */
export function connectLines(c: ConnectionInfo): { label: string; text: string }[] {
  const lines: { label: string; text: string | null }[] = [
    { label: 'QEMU -drive', text: c.qemu.drive },
    { label: 'QEMU -blockdev', text: c.qemu.blockdev },
    { label: 'libvirt disk', text: c.libvirt.tcp },
    { label: 'basalt device map', text: c.device_map.tcp },
    { label: 'nbd-client', text: c.nbd_client.tcp },
    { label: 'NBD URI (TCP)', text: c.uris.tcp },
    { label: 'NBD URI (TLS)', text: c.uris.tls },
    { label: 'NBD URI (Unix socket, on the server host)', text: c.uris.unix },
    { label: 'basalt device map (Unix socket)', text: c.device_map.unix },
  ];
  return lines.filter((l): l is { label: string; text: string } => l.text !== null);
}

function CopyLine({ label, text }: { label: string; text: string }) {
  const [copied, setCopied] = useState<'yes' | 'failed' | null>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied('yes');
    } catch {
      setCopied('failed');
    }
  };
  return (
    <figure class="connect-line" aria-label={label}>
      <div class="connect-head">
        <span class="connect-label">{label}</span>
        <button type="button" class="link-button" aria-label={`Copy ${label}`} onClick={() => void copy()}>
          Copy
        </button>
        <span class="muted" aria-live="polite">
          {copied === 'yes' ? 'Copied' : copied === 'failed' ? 'Select the text and copy it' : ''}
        </span>
      </div>
      <pre class="connect-text">{text}</pre>
    </figure>
  );
}

interface PanelProps {
  spec: string;
  snap?: string;
  /** The attach lines and credentials sit behind a disclosure, closed at first (the Details tab: they are long). */
  collapsed?: boolean;
}

export function ConnectPanel({ spec, snap, collapsed = false }: PanelProps) {
  const info = useLoad(() => api.connection(spec, snap), [spec, snap]);
  const c = info.data;
  const subject = snap ? `${spec}@${snap}` : spec;
  return (
    <section class="connect" aria-label={`Connect ${subject}`}>
      <h3>Connect {subject}</h3>
      <ErrorText error={info.error} />
      {c && (
        <>
          <p class="muted">
            {c.read_only
              ? 'A snapshot attaches read-only.'
              : `Attaches read-write${c.exclusive_lock ? ' (exclusive-lock: one writer at a time)' : ''}.`}{' '}
            NBD on {c.nbd.address}
            {c.nbd.tls ? ' (TLS)' : ''}; on the server host also {c.nbd.unix_socket}.
          </p>
          <Callout kind="warning">{c.warning}</Callout>
          {collapsed ? (
            <details class="connect-examples">
              <summary>
                How to attach: {connectLines(c).length} copyable lines (QEMU, libvirt, basalt device map, nbd-client,
                NBD URIs) and credentials
              </summary>
              <ConnectLines c={c} />
            </details>
          ) : (
            <ConnectLines c={c} />
          )}
        </>
      )}
    </section>
  );
}

function ConnectLines({ c }: { c: ConnectionInfo }) {
  return (
    <>
      {connectLines(c).map((l) => (
        <CopyLine key={l.label} label={l.label} text={l.text} />
      ))}
      <dl class="connect-credentials">
        <div class="dl-item">
          <dt>Credentials (TCP)</dt>
          <dd>{c.credentials.tcp}</dd>
        </div>
        <div class="dl-item">
          <dt>Credentials (Unix socket)</dt>
          <dd>{c.credentials.unix}</dd>
        </div>
        <div class="dl-item">
          <dt>Your access</dt>
          <dd>
            {c.credentials.your_access} as {c.credentials.user}
          </dd>
        </div>
      </dl>
    </>
  );
}

export function ConnectDialog({ spec, snap, onClose }: { spec: string; snap?: string; onClose: () => void }) {
  return (
    <Dialog title={`Connect ${snap ? `${spec}@${snap}` : spec}`} onClose={onClose} wide>
      <div class="dialog-body">
        <ConnectPanel spec={spec} {...(snap ? { snap } : {})} />
      </div>
      <footer class="dialog-foot">
        <button type="button" onClick={onClose}>
          Done
        </button>
      </footer>
    </Dialog>
  );
}
