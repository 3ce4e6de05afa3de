// Image features: what each one does, the seed's guidance, and the checkbox rules (dependencies, what may change
// after creation), so the create and edit forms never offer a combination the server refuses.

export type FeatureName = 'layering' | 'striping' | 'exclusive-lock' | 'object-map' | 'fast-diff' | 'deep-flatten';

export interface FeatureInfo {
  name: FeatureName;
  enables: string;
  guidance: string;
  /** The feature this one needs. */
  requires?: FeatureName;
}

/** The features the form offers, in the order it shows them. */
export const FEATURES: readonly FeatureInfo[] = [
  {
    name: 'layering',
    enables: 'Snapshot-based clone workflows',
    guidance: 'Keep enabled for template/clone workflows.',
  },
  {
    name: 'exclusive-lock',
    enables: 'Single-writer protection for image safety',
    guidance: 'Keep enabled for VM safety and journaling/lifecycle workflows.',
  },
  {
    name: 'object-map',
    enables: 'Faster object state tracking',
    guidance: 'Keep enabled with fast-diff workflows.',
    requires: 'exclusive-lock',
  },
  {
    name: 'fast-diff',
    enables: 'Faster changed-block calculations',
    guidance: 'Keep enabled for snapshot/clone operational efficiency.',
    requires: 'object-map',
  },
  {
    name: 'deep-flatten',
    enables: "Flatten also detaches the clone's own snapshots from the parent",
    guidance: 'Keep enabled so a flattened clone is fully independent.',
  },
  {
    name: 'striping',
    enables: 'Advanced layout behavior (stripe unit and count)',
    guidance: 'Enable only when platform policy explicitly requires it.',
  },
];

/** The server's default set (the reference's 61). */
export const DEFAULT_FEATURES: readonly FeatureName[] = [
  'layering',
  'exclusive-lock',
  'object-map',
  'fast-diff',
  'deep-flatten',
];

/** Features that can be switched on and off after creation. */
const MUTABLE: readonly FeatureName[] = ['exclusive-lock', 'object-map', 'fast-diff'];

export type FormMode = 'create' | 'edit';

function info(name: FeatureName): FeatureInfo {
  const found = FEATURES.find((f) => f.name === name);
  if (!found) throw new Error(`unknown feature ${name}`);
  return found;
}

function dependents(name: FeatureName): FeatureName[] {
  return FEATURES.filter((f) => f.requires === name).flatMap((f) => [f.name, ...dependents(f.name)]);
}

/**
 * Applies one checkbox change: checking a feature whose requirement is unchecked changes nothing; unchecking a
 * feature also clears everything that needs it; object-map and fast-diff go together (checking object-map checks
 * fast-diff, unchecking fast-diff unchecks object-map), as the server keeps them.
 */
export function toggleFeature(
  selected: ReadonlySet<FeatureName>,
  name: FeatureName,
  checked: boolean,
): Set<FeatureName> {
  const next = new Set(selected);
  if (checked) {
    const needs = info(name).requires;
    if (needs && !next.has(needs)) return next;
    next.add(name);
    if (name === 'object-map') next.add('fast-diff');
  } else {
    for (const gone of [name, ...dependents(name)]) next.delete(gone);
    if (name === 'fast-diff') next.delete('object-map');
  }
  return next;
}

/** Why a feature's checkbox cannot be changed now, or null. `original` is the image's set when editing. */
export function featureLockedReason(
  name: FeatureName,
  selected: ReadonlySet<FeatureName>,
  mode: FormMode,
  original: ReadonlySet<FeatureName> = new Set(),
): string | null {
  if (mode === 'edit' && !MUTABLE.includes(name)) {
    if (name === 'deep-flatten' && original.has('deep-flatten')) return null;
    if (name === 'deep-flatten') return 'deep-flatten can be disabled but never enabled again.';
    if (name === 'striping') return 'The layout (stripe unit and count) is fixed when the image is created.';
    return `${name} is fixed when the image is created.`;
  }
  const needs = info(name).requires;
  if (needs && !selected.has(needs)) return `Needs ${needs}.`;
  return null;
}

/** The feature names to send: striping is set by the server from the layout, so it is never sent. */
export function featuresToSend(selected: ReadonlySet<FeatureName>): FeatureName[] {
  return FEATURES.map((f) => f.name).filter((n) => n !== 'striping' && selected.has(n));
}

/** Reads a server feature list into the form's set (ignoring names the form does not offer). */
export function featuresFromNames(names: readonly string[]): Set<FeatureName> {
  return new Set(FEATURES.map((f) => f.name).filter((n) => names.includes(n)));
}

/** Features an unticked feature took with it, keyed by that feature, so ticking it again brings them back. */
export type FeatureMemory = Partial<Record<FeatureName, FeatureName[]>>;

/**
 * Like {@link toggleFeature}, remembering what an untick cleared: unticking exclusive-lock clears object-map and
 * fast-diff, and ticking exclusive-lock again restores them (a person toggling it back expects the same form).
 */
export function toggleFeatureRemembering(
  selected: ReadonlySet<FeatureName>,
  name: FeatureName,
  checked: boolean,
  memory: FeatureMemory,
): { features: Set<FeatureName>; memory: FeatureMemory } {
  let features = toggleFeature(selected, name, checked);
  const next: FeatureMemory = { ...memory };
  if (!checked) {
    const cleared = FEATURES.map((f) => f.name).filter((f) => f !== name && selected.has(f) && !features.has(f));
    if (cleared.length > 0) next[name] = cleared;
  } else if (features.has(name)) {
    for (const f of FEATURES.map((i) => i.name).filter((n) => memory[name]?.includes(n))) {
      features = toggleFeature(features, f, true);
    }
    delete next[name];
  }
  return { features, memory: next };
}
