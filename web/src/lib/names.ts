// Name rules for pools, namespaces, images and snapshots, as the server checks them, so forms can say so inline.

/** The longest name the server accepts, in bytes of UTF-8. */
export const NAME_MAX_BYTES = 250;

export type NameKind = 'Image' | 'Pool' | 'Namespace' | 'Snapshot';

/** Returns what is wrong with `name` as a `kind` name, or null when it is valid. */
export function nameError(kind: NameKind, name: string): string | null {
  if (name === '') return `${kind} name is required.`;
  if (/[/@]/.test(name)) return "'/' and '@' are not allowed.";
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'Control characters are not allowed.';
  if (kind === 'Snapshot' && name.startsWith('.')) return 'A snapshot name must not start with a dot.';
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > NAME_MAX_BYTES) return `${kind} name is ${bytes} bytes long; the limit is ${NAME_MAX_BYTES}.`;
  return null;
}

/** The reference's default snapshot name: `<image>_<ISO-8601 time>`. */
export function defaultSnapshotName(image: string, now: Date): string {
  return `${image}_${now.toISOString().replace(/\.\d{3}Z$/, 'Z')}`;
}

/** `pool[/namespace]/image`, the notation the API and the CLI use. */
export function imageSpec(pool: string, namespace: string | null, image: string): string {
  return namespace ? `${pool}/${namespace}/${image}` : `${pool}/${image}`;
}
