//! Model-based property test of the engine: random sequences of image, snapshot, clone and trash operations run
//! against the engine and against a model of plain byte vectors, comparing every read, listing and refusal.
//!
//! The model knows nothing of layers, objects or copy-on-write: an image is its bytes, a snapshot is a frozen copy,
//! a clone starts as a copy of its parent snapshot. Whatever the engine does underneath must read back the same.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use basalt_core::{
    Backend, BlockState, Clock, CloneRequest, CreateOptions, Durability, ErrorKind, Features, ImageIo, ImageName,
    ImageSpec, ManualClock, Namespace, ObjectOrder, OpenTarget, PoolName, PoolNs, Progress, ResizePolicy, SnapName,
    SnapSpec, Striping, Timestamp, TrashForce, TrashSource, ZeroMode,
};
use basalt_engine::Engine;
use proptest::collection::vec;
use proptest::prelude::*;

const POOL: &str = "rbd";
const NAMED_NS: &str = "ns1";
/// Image names are drawn from a small set so that name clashes (EEXIST) happen.
const IMAGE_NAMES: u8 = 5;
/// Snapshot names likewise.
const SNAP_NAMES: u8 = 4;
/// Images alive at once (heads and trash), to keep a case fast.
const MAX_IMAGES: usize = 8;
const MIN_CREATE_BYTES: u64 = 64 << 10;
const MAX_IMAGE_BYTES: u64 = 2 << 20;
/// The engine's clock stands still: trash deferment is either already over or an hour away.
const START: Timestamp = Timestamp(1_700_000_000);
const DEFER_SECS: u64 = 3600;
const CLIENT: &str = "model-test";

// ---------------------------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------------------------

/// Where an I/O lands, chosen relative to the image's size when the operation runs (so shrinking a case keeps it
/// meaningful).
#[derive(Debug, Clone, Copy)]
struct Extent {
    align: Align,
    off: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
enum Align {
    /// Whole 4 KiB blocks.
    Block,
    /// 512-byte sectors, as NBD clients send.
    Sector,
    /// Anywhere, any length.
    Byte,
    /// A range that ends exactly at the image's end (partial last blocks).
    Tail,
    /// The whole image.
    Whole,
}

impl Extent {
    /// Returns `(offset, length)` inside an image of `size` bytes, or `None` for an empty image.
    fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        let (off, len) = (u64::from(self.off), u64::from(self.len));
        let granular = |unit: u64, max_units: u64| {
            let units = size / unit;
            if units == 0 {
                return None;
            }
            let first = off % units;
            let count = 1 + len % max_units.min(units - first);
            Some((first * unit, count * unit))
        };
        let byte = || {
            let start = off % size;
            (start, 1 + len % (size - start).min(100_000))
        };
        Some(match self.align {
            Align::Block => granular(4096, 64).unwrap_or_else(byte),
            Align::Sector => granular(512, 300).unwrap_or_else(byte),
            Align::Byte => byte(),
            Align::Tail => {
                let length = 1 + len % size.min(70_000);
                (size - length, length)
            }
            Align::Whole => (0, size),
        })
    }
}

/// An image size, resolved into a range and rounded down to `unit` bytes.
#[derive(Debug, Clone, Copy)]
struct SizeSel {
    unit: u64,
    raw: u32,
}

impl SizeSel {
    fn resolve(self, min: u64, max: u64) -> u64 {
        let value = min + u64::from(self.raw) % (max - min + 1);
        (value / self.unit * self.unit).max(min)
    }
}

/// Object size and striping of a new image.
#[derive(Debug, Clone, Copy)]
struct LayoutSel {
    order: Option<u8>,
    /// Stripe unit and count.
    striping: Option<(u64, u64)>,
}

impl LayoutSel {
    /// The layout the engine must report for an image created with this selection.
    fn expected(self) -> (ObjectOrder, Striping) {
        let order = ObjectOrder::new(self.order.unwrap_or(basalt_core::ORDER_DEFAULT)).expect("generated order");
        let striping = match self.striping {
            Some((unit_bytes, count)) => Striping { unit_bytes, count },
            None => Striping::none(order),
        };
        (order, striping)
    }
}

/// How a range is made to read as zeros.
#[derive(Debug, Clone, Copy)]
enum ZeroHow {
    Discard,
    ZeroesMayUnmap,
    ZeroesKeepAllocated,
}

/// One step of a case. Images, snapshots and trash entries are picked by index into what exists when the step
/// runs (modulo the count), so every generated sequence is runnable and shrinks well.
#[derive(Debug, Clone)]
enum Op {
    Create {
        ns: bool,
        name: u8,
        size: SizeSel,
        layout: LayoutSel,
    },
    Write {
        img: u16,
        at: Extent,
        seed: u8,
        fua: bool,
    },
    Zero {
        img: u16,
        at: Extent,
        how: ZeroHow,
        fua: bool,
    },
    /// A write or read that crosses the image's end: EINVAL.
    PastEnd {
        img: u16,
        len: u16,
        write: bool,
    },
    /// A write through a read-only handle: on a snapshot picked by `snap`, else on the head picked by `img`: EROFS.
    WriteReadOnly {
        img: u16,
        snap: Option<u16>,
    },
    Read {
        img: u16,
        at: Extent,
        via_held: bool,
    },
    Flush {
        img: u16,
    },
    /// Keeps a writable handle open until `Release` (at most one; holding another image releases the first).
    Hold {
        img: u16,
    },
    Release,
    SnapCreate {
        img: u16,
        name: u8,
    },
    SnapProtect {
        snap: u16,
    },
    SnapUnprotect {
        snap: u16,
    },
    SnapRemove {
        snap: u16,
    },
    Rollback {
        snap: u16,
    },
    ReadSnap {
        snap: u16,
    },
    /// Clones a snapshot; with `protect_first` an unprotected source is protected first, else the clone must be
    /// refused (EINVAL, as for a v1 clone of an unprotected snapshot).
    Clone {
        src: u16,
        protect_first: bool,
        ns: bool,
        name: u8,
        layout: Option<LayoutSel>,
    },
    Flatten {
        img: u16,
    },
    Resize {
        img: u16,
        size: SizeSel,
        allow_shrink: bool,
    },
    TrashMove {
        img: u16,
        defer: bool,
    },
    TrashRestore {
        entry: u16,
        rename: Option<u8>,
    },
    TrashRemove {
        entry: u16,
        force: bool,
    },
    Remove {
        img: u16,
    },
    Lists,
    CheckAll,
    Reopen,
}

// ---------------------------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------------------------

fn extent() -> impl Strategy<Value = Extent> {
    let align = prop_oneof![
        3 => Just(Align::Block),
        2 => Just(Align::Sector),
        3 => Just(Align::Byte),
        1 => Just(Align::Tail),
        1 => Just(Align::Whole),
    ];
    (align, any::<u32>(), any::<u32>()).prop_map(|(align, off, len)| Extent { align, off, len })
}

fn size_sel() -> impl Strategy<Value = SizeSel> {
    let unit = prop_oneof![3 => Just(4096u64), 1 => Just(512u64), 1 => Just(1u64)];
    (unit, any::<u32>()).prop_map(|(unit, raw)| SizeSel { unit, raw })
}

/// Default 4 MiB objects, small objects (4–64 KiB), and striping with 4 or 8 KiB units over 2–4 objects.
fn layout_sel() -> impl Strategy<Value = LayoutSel> {
    prop_oneof![
        3 => Just(LayoutSel { order: None, striping: None }),
        2 => (12u8..=16).prop_map(|order| LayoutSel { order: Some(order), striping: None }),
        2 => (prop::option::of(13u8..=16), prop_oneof![Just(4096u64), Just(8192u64)], 2u64..=4)
            .prop_map(|(order, unit, count)| LayoutSel { order, striping: Some((unit, count)) }),
        1 => (2u64..=4).prop_map(|count| LayoutSel { order: Some(12), striping: Some((4096, count)) }),
    ]
}

/// A clone's explicit layout always names both order and striping, so nothing is left to inheritance rules.
fn clone_layout() -> impl Strategy<Value = Option<LayoutSel>> {
    prop_oneof![
        3 => Just(None),
        1 => layout_sel().prop_map(|l| {
            let order = l.order.unwrap_or(basalt_core::ORDER_DEFAULT);
            Some(LayoutSel { order: Some(order), striping: Some(l.striping.unwrap_or((1 << order, 1))) })
        }),
    ]
}

fn create_op() -> impl Strategy<Value = Op> {
    (any::<bool>(), 0..IMAGE_NAMES, size_sel(), layout_sel()).prop_map(|(ns, name, size, layout)| Op::Create {
        ns,
        name,
        size,
        layout,
    })
}

fn zero_how() -> impl Strategy<Value = ZeroHow> {
    prop_oneof![Just(ZeroHow::Discard), Just(ZeroHow::ZeroesMayUnmap), Just(ZeroHow::ZeroesKeepAllocated)]
}

fn op() -> impl Strategy<Value = Op> {
    let img = any::<u16>;
    prop_oneof![
        5 => create_op(),
        14 => (img(), extent(), any::<u8>(), any::<bool>())
            .prop_map(|(img, at, seed, fua)| Op::Write { img, at, seed, fua }),
        5 => (img(), extent(), zero_how(), any::<bool>()).prop_map(|(img, at, how, fua)| Op::Zero { img, at, how, fua }),
        1 => (img(), any::<u16>(), any::<bool>()).prop_map(|(img, len, write)| Op::PastEnd { img, len, write }),
        1 => (img(), prop::option::of(any::<u16>())).prop_map(|(img, snap)| Op::WriteReadOnly { img, snap }),
        6 => (img(), extent(), any::<bool>()).prop_map(|(img, at, via_held)| Op::Read { img, at, via_held }),
        2 => img().prop_map(|img| Op::Flush { img }),
        3 => img().prop_map(|img| Op::Hold { img }),
        2 => Just(Op::Release),
        9 => (img(), 0..SNAP_NAMES).prop_map(|(img, name)| Op::SnapCreate { img, name }),
        4 => any::<u16>().prop_map(|snap| Op::SnapProtect { snap }),
        3 => any::<u16>().prop_map(|snap| Op::SnapUnprotect { snap }),
        3 => any::<u16>().prop_map(|snap| Op::SnapRemove { snap }),
        3 => any::<u16>().prop_map(|snap| Op::Rollback { snap }),
        3 => any::<u16>().prop_map(|snap| Op::ReadSnap { snap }),
        5 => (any::<u16>(), prop::bool::weighted(0.8), any::<bool>(), 0..IMAGE_NAMES, clone_layout())
            .prop_map(|(src, protect_first, ns, name, layout)| Op::Clone { src, protect_first, ns, name, layout }),
        2 => img().prop_map(|img| Op::Flatten { img }),
        4 => (img(), size_sel(), prop::bool::weighted(0.8))
            .prop_map(|(img, size, allow_shrink)| Op::Resize { img, size, allow_shrink }),
        2 => (img(), any::<bool>()).prop_map(|(img, defer)| Op::TrashMove { img, defer }),
        2 => (any::<u16>(), prop::option::weighted(0.3, 0..IMAGE_NAMES))
            .prop_map(|(entry, rename)| Op::TrashRestore { entry, rename }),
        1 => (any::<u16>(), any::<bool>()).prop_map(|(entry, force)| Op::TrashRemove { entry, force }),
        1 => img().prop_map(|img| Op::Remove { img }),
        2 => Just(Op::Lists),
        1 => Just(Op::CheckAll),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MSnap {
    name: SnapName,
    bytes: Vec<u8>,
    protected: bool,
}

#[derive(Debug, Clone)]
struct MImage {
    spec: ImageSpec,
    /// `Some(deferment end)` while the image is in the trash.
    trash: Option<Timestamp>,
    bytes: Vec<u8>,
    /// In creation (id) order.
    snaps: Vec<MSnap>,
    /// Parent image id and snapshot, for clones not yet flattened.
    parent: Option<(String, SnapName)>,
    order: ObjectOrder,
    striping: Striping,
}

impl MImage {
    fn snap(&self, name: &SnapName) -> Option<&MSnap> {
        self.snaps.iter().find(|s| &s.name == name)
    }
}

/// Every image by engine id; trashed images stay here with `trash` set, as they keep their snapshots and children.
#[derive(Debug, Default)]
struct Model {
    images: BTreeMap<String, MImage>,
}

impl Model {
    /// Live images, ordered by spec so that picking by index does not depend on engine ids.
    fn heads(&self) -> Vec<String> {
        let mut heads: Vec<(&ImageSpec, &String)> =
            self.images.iter().filter(|(_, m)| m.trash.is_none()).map(|(id, m)| (&m.spec, id)).collect();
        heads.sort();
        heads.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Trashed images, ordered by original spec.
    fn trashed(&self) -> Vec<String> {
        let mut trashed: Vec<(&ImageSpec, &String)> =
            self.images.iter().filter(|(_, m)| m.trash.is_some()).map(|(id, m)| (&m.spec, id)).collect();
        trashed.sort();
        trashed.into_iter().map(|(_, id)| id.clone()).collect()
    }

    fn name_taken(&self, spec: &ImageSpec) -> bool {
        self.images.values().any(|m| m.trash.is_none() && &m.spec == spec)
    }

    /// Ids of the clones (live or trashed) of one snapshot.
    fn children(&self, parent_id: &str, snap: &SnapName) -> Vec<String> {
        self.images
            .iter()
            .filter(|(_, m)| m.parent.as_ref().is_some_and(|(p, s)| p == parent_id && s == snap))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn image(&self, id: &str) -> &MImage {
        self.images.get(id).expect("model image exists")
    }

    fn image_mut(&mut self, id: &str) -> &mut MImage {
        self.images.get_mut(id).expect("model image exists")
    }
}

/// What the model says an engine call must do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Success,
    /// Refused with one of these kinds (more than one only when several reasons apply at once).
    Refusal(Vec<ErrorKind>),
}

impl Expect {
    fn from_reasons(reasons: Vec<ErrorKind>) -> Expect {
        if reasons.is_empty() { Expect::Success } else { Expect::Refusal(reasons) }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn pool() -> PoolName {
    PoolName::new(POOL).expect("valid pool name")
}

fn location(named_ns: bool) -> PoolNs {
    let namespace = if named_ns { Namespace::new(NAMED_NS).expect("valid namespace") } else { Namespace::default_ns() };
    PoolNs::new(pool(), namespace)
}

fn locations() -> [PoolNs; 2] {
    [location(false), location(true)]
}

fn image_spec(loc: &PoolNs, name: u8) -> ImageSpec {
    let name = ImageName::new(format!("i{}", name % IMAGE_NAMES)).expect("valid image name");
    ImageSpec::new(loc.pool.clone(), loc.namespace.clone(), name)
}

fn snap_name(name: u8) -> SnapName {
    SnapName::new(format!("s{}", name % SNAP_NAMES)).expect("valid snapshot name")
}

fn snap_spec(spec: &ImageSpec, snap: &SnapName) -> SnapSpec {
    SnapSpec { image: spec.clone(), snap: snap.clone() }
}

/// Write data: a pseudo-random stream keyed by seed and offset, so two writes rarely carry the same bytes and a
/// misplaced block shows. Seed 0 writes zeros, which the engine must store like any other data.
fn pattern(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    if seed == 0 {
        return vec![0; len];
    }
    let mut x = (u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ offset.wrapping_mul(0xD6E8_FEB8_6659_FD93)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn durability(fua: bool) -> Durability {
    if fua { Durability::ForceUnitAccess } else { Durability::Buffered }
}

fn pick<T: Clone>(items: &[T], sel: u16) -> Option<T> {
    if items.is_empty() { None } else { Some(items[usize::from(sel) % items.len()].clone()) }
}

fn range(offset: u64, len: u64) -> std::ops::Range<usize> {
    let start = usize::try_from(offset).expect("offset fits usize");
    start..start + usize::try_from(len).expect("length fits usize")
}

/// A writable handle the sequence keeps open across steps.
struct Held {
    id: String,
    io: Box<dyn ImageIo>,
}

// ---------------------------------------------------------------------------------------------------------------
// The harness: runs each step on the engine and on the model
// ---------------------------------------------------------------------------------------------------------------

struct Harness {
    // Field order is drop order: the handle goes before the engine, the engine before its directory.
    held: Option<Held>,
    engine: Option<Engine>,
    clock: Arc<ManualClock>,
    model: Model,
    /// What ran so far, resolved to names and numbers, for the failure message.
    trace: Vec<String>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let clock = Arc::new(ManualClock::new(START));
        let engine = Engine::open(dir.path(), clock.clone() as Arc<dyn Clock>).expect("engine opens on an empty dir");
        let pool = pool();
        engine.pool_create(&pool).expect("pool create");
        engine.pool_application_enable(&pool, "rbd").expect("pool application enable");
        engine.namespace_create(&location(true)).expect("namespace create");
        Harness { held: None, engine: Some(engine), clock, model: Model::default(), trace: Vec::new(), dir }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    fn note(&mut self, line: impl Into<String>) {
        self.trace.push(line.into());
    }

    fn fail(&self, message: impl fmt::Display) -> ! {
        panic!("{message}\n--- steps (last one failed) ---\n{}", self.trace.join("\n"));
    }

    /// Compares an engine result with the model's expectation; returns the value on success.
    fn settle<T>(&self, what: &str, expect: &Expect, got: basalt_core::Result<T>) -> Option<T> {
        match (expect, got) {
            (Expect::Success, Ok(value)) => Some(value),
            (Expect::Success, Err(e)) => {
                self.fail(format!("{what}: expected success, the engine refused with {}: {e}", e.kind()))
            }
            (Expect::Refusal(kinds), Ok(_)) => {
                self.fail(format!("{what}: expected a refusal with {kinds:?}, the engine succeeded"))
            }
            (Expect::Refusal(kinds), Err(e)) => {
                if !kinds.contains(&e.kind()) {
                    self.fail(format!("{what}: expected a refusal with {kinds:?}, got {}: {e}", e.kind()));
                }
                None
            }
        }
    }

    fn held_io(&self, id: &str) -> Option<&dyn ImageIo> {
        self.held.as_ref().filter(|h| h.id == id).map(|h| h.io.as_ref())
    }

    /// Runs `f` on a writable handle: the held one if it is this image's, else one opened for the call.
    fn with_writer<T>(
        &self,
        id: &str,
        f: impl FnOnce(&dyn ImageIo) -> basalt_core::Result<T>,
    ) -> basalt_core::Result<T> {
        if let Some(io) = self.held_io(id) {
            return f(io);
        }
        let spec = &self.model.image(id).spec;
        let io = self
            .engine()
            .open(spec, &OpenTarget::Head, CLIENT)
            .unwrap_or_else(|e| self.fail(format!("open {spec} for writing: {}: {e}", e.kind())));
        f(io.as_ref())
    }

    /// Opens a read-only handle on the head.
    fn reader(&self, id: &str) -> Box<dyn ImageIo> {
        let spec = &self.model.image(id).spec;
        self.engine()
            .open(spec, &OpenTarget::HeadReadOnly, CLIENT)
            .unwrap_or_else(|e| self.fail(format!("open {spec} read-only: {}: {e}", e.kind())))
    }

    fn compare_bytes(&self, what: &str, base: u64, expected: &[u8], actual: &[u8]) {
        if expected.len() != actual.len() {
            self.fail(format!("{what}: read {} bytes where {} were expected", actual.len(), expected.len()));
        }
        let differs = |(a, b): (&u8, &u8)| a != b;
        if let Some(first) = expected.iter().zip(actual).position(differs) {
            let last = expected.iter().zip(actual).rposition(differs).unwrap_or(first);
            let count = expected.iter().zip(actual).filter(|p| differs(*p)).count();
            let end = (first + 16).min(expected.len());
            self.fail(format!(
                "{what}: {count} bytes differ between offsets {} and {}; from the first: expected {:02x?}, read {:02x?}",
                base + first as u64,
                base + last as u64,
                &expected[first..end],
                &actual[first..end]
            ));
        }
    }

    /// Reads `[offset, offset + len)` through `io` and compares it, its size and its block status with `model`.
    fn check_io(&self, what: &str, io: &dyn ImageIo, model: &[u8], offset: u64, len: u64) {
        if io.size_bytes() != model.len() as u64 {
            self.fail(format!("{what}: handle size is {}, the model says {}", io.size_bytes(), model.len()));
        }
        let mut buf = vec![0xA5u8; usize::try_from(len).expect("length fits usize")];
        if let Err(e) = io.read(offset, &mut buf) {
            self.fail(format!("{what}: read at {offset} length {len} failed with {}: {e}", e.kind()));
        }
        self.compare_bytes(what, offset, &model[range(offset, len)], &buf);
        // A hole must read as zeros; the extents must tile the range exactly.
        let extents = io
            .block_status(offset, len)
            .unwrap_or_else(|e| self.fail(format!("{what}: block status failed with {}: {e}", e.kind())));
        let mut at = offset;
        for extent in &extents {
            if extent.offset != at || extent.length == 0 || at + extent.length > offset + len {
                self.fail(format!("{what}: block status extents do not tile [{offset}, +{len}): {extents:?}"));
            }
            if extent.state == BlockState::Hole && model[range(extent.offset, extent.length)].iter().any(|b| *b != 0) {
                self.fail(format!("{what}: block status reports a hole over data: {extent:?}"));
            }
            at += extent.length;
        }
        if at != offset + len {
            self.fail(format!("{what}: block status extents do not cover [{offset}, +{len}): {extents:?}"));
        }
        // A sparse read returns the same bytes, and the same extents from its single resolution of each block.
        let mut sparse = vec![0x5Au8; buf.len()];
        match io.read_sparse(offset, &mut sparse) {
            Ok(sparse_extents) if sparse_extents != extents => self.fail(format!(
                "{what}: sparse read extents differ from block status: {sparse_extents:?} vs {extents:?}"
            )),
            Ok(_) => self.compare_bytes(&format!("{what} (sparse read)"), offset, &model[range(offset, len)], &sparse),
            Err(e) => self.fail(format!("{what}: sparse read at {offset} length {len} failed with {}: {e}", e.kind())),
        }
    }

    /// Compares one live image with the model: info, watchers, head data, snapshot list and every snapshot's data.
    fn check_image(&self, id: &str) {
        let m = self.model.image(id);
        let spec = &m.spec;
        let info =
            self.engine().image_info(spec).unwrap_or_else(|e| self.fail(format!("info {spec}: {}: {e}", e.kind())));
        if info.id != id {
            self.fail(format!("info {spec}: id is {}, the model says {id}", info.id));
        }
        if info.size_bytes != m.bytes.len() as u64 {
            self.fail(format!("info {spec}: size is {}, the model says {}", info.size_bytes, m.bytes.len()));
        }
        if info.snapshot_count != m.snaps.len() as u64 {
            self.fail(format!("info {spec}: {} snapshots, the model has {}", info.snapshot_count, m.snaps.len()));
        }
        if (info.order, info.striping) != (m.order, m.striping) {
            self.fail(format!(
                "info {spec}: layout is {:?} {:?}, the model says {:?} {:?}",
                info.order, info.striping, m.order, m.striping
            ));
        }
        if info.features.contains(Features::STRIPING) == m.striping.is_trivial(m.order) {
            self.fail(format!("info {spec}: striping feature {:?} does not match {:?}", info.features, m.striping));
        }
        match (&m.parent, &info.parent) {
            (None, None) => {}
            (Some((parent_id, snap)), Some(p)) => {
                let parent = self.model.image(parent_id);
                let parent_snap_size = parent.snap(snap).map_or(0, |s| s.bytes.len() as u64);
                if &p.image_id != parent_id || &p.snap != snap || p.in_trash != parent.trash.is_some() {
                    self.fail(format!("info {spec}: parent is {p:?}, the model says {} @{snap}", parent.spec));
                }
                if !p.in_trash && (p.image != parent.spec.image || p.namespace != *parent.spec.namespace()) {
                    self.fail(format!("info {spec}: parent is {p:?}, the model says {} @{snap}", parent.spec));
                }
                if p.overlap_bytes > info.size_bytes || p.overlap_bytes > parent_snap_size {
                    self.fail(format!(
                        "info {spec}: parent overlap {} exceeds the size {} or the parent snapshot's {}",
                        p.overlap_bytes, info.size_bytes, parent_snap_size
                    ));
                }
            }
            (expected, got) => self.fail(format!("info {spec}: parent is {got:?}, the model says {expected:?}")),
        }
        // Every handle the test opened for one step is closed by now: only the held one may show.
        let writers: Vec<bool> = info.watchers.iter().map(|w| w.writable).collect();
        let expected_writers = if self.held_io(id).is_some() { vec![true] } else { Vec::new() };
        if writers != expected_writers {
            self.fail(format!(
                "info {spec}: watchers {:?}, expected writable flags {expected_writers:?}",
                info.watchers
            ));
        }

        let len = m.bytes.len() as u64;
        let reader = self.reader(id);
        if len > 0 {
            self.check_io(&format!("head of {spec}"), reader.as_ref(), &m.bytes, 0, len);
        } else if reader.size_bytes() != 0 {
            self.fail(format!("head of {spec}: size {} where the model has 0", reader.size_bytes()));
        }
        drop(reader);

        let snaps =
            self.engine().snap_list(spec).unwrap_or_else(|e| self.fail(format!("snap list {spec}: {}: {e}", e.kind())));
        let got: Vec<(String, u64, bool, u64)> =
            snaps.iter().map(|s| (s.name.to_string(), s.size_bytes, s.protected, s.children)).collect();
        let expected: Vec<(String, u64, bool, u64)> = m
            .snaps
            .iter()
            .map(|s| {
                let children = self.model.children(id, &s.name).len() as u64;
                (s.name.to_string(), s.bytes.len() as u64, s.protected, children)
            })
            .collect();
        if got != expected {
            self.fail(format!("snap list {spec}: (name, size, protected, children) {got:?}, expected {expected:?}"));
        }
        if snaps.windows(2).any(|w| w[0].id >= w[1].id) {
            self.fail(format!("snap list {spec}: ids are not increasing: {snaps:?}"));
        }
        for snap in &m.snaps {
            self.check_snapshot(id, snap);
        }
    }

    fn check_snapshot(&self, id: &str, snap: &MSnap) {
        let spec = &self.model.image(id).spec;
        let what = format!("snapshot {spec}@{}", snap.name);
        let info = self
            .engine()
            .image_info_at_snap(&snap_spec(spec, &snap.name))
            .unwrap_or_else(|e| self.fail(format!("{what}: info: {}: {e}", e.kind())));
        if info.size_bytes != snap.bytes.len() as u64 {
            self.fail(format!("{what}: info size {}, the model says {}", info.size_bytes, snap.bytes.len()));
        }
        let io = self
            .engine()
            .open(spec, &OpenTarget::Snapshot(snap.name.clone()), CLIENT)
            .unwrap_or_else(|e| self.fail(format!("{what}: open: {}: {e}", e.kind())));
        if !io.is_read_only() {
            self.fail(format!("{what}: the handle is not read-only"));
        }
        if !snap.bytes.is_empty() {
            self.check_io(&what, io.as_ref(), &snap.bytes, 0, snap.bytes.len() as u64);
        }
    }

    /// Compares image lists, namespace counts, trash lists and every snapshot's children with the model.
    fn check_lists(&self) {
        let engine = self.engine();
        for loc in locations() {
            let listed = engine.image_list(&loc).unwrap_or_else(|e| self.fail(format!("image list {loc}: {e}")));
            let got: Vec<(String, String)> = listed.iter().map(|e| (e.name.to_string(), e.id.clone())).collect();
            let mut expected: Vec<(String, String)> = self
                .model
                .images
                .iter()
                .filter(|(_, m)| m.trash.is_none() && m.spec.location == loc)
                .map(|(id, m)| (m.spec.image.to_string(), id.clone()))
                .collect();
            expected.sort();
            if got != expected {
                self.fail(format!("image list {loc}: (name, id) {got:?}, expected {expected:?}"));
            }

            let trash = engine.trash_list(&loc).unwrap_or_else(|e| self.fail(format!("trash list {loc}: {e}")));
            let mut got: Vec<(String, String, u64)> =
                trash.iter().map(|e| (e.id.clone(), e.name.to_string(), e.deferment_end_time.secs())).collect();
            got.sort();
            let mut expected: Vec<(String, String, u64)> = self
                .model
                .images
                .iter()
                .filter_map(|(id, m)| match m.trash {
                    Some(end) if m.spec.location == loc => Some((id.clone(), m.spec.image.to_string(), end.secs())),
                    _ => None,
                })
                .collect();
            expected.sort();
            if got != expected {
                self.fail(format!("trash list {loc}: (id, name, deferment end) {got:?}, expected {expected:?}"));
            }
            if let Some(entry) = trash.iter().find(|e| e.source != TrashSource::User) {
                self.fail(format!("trash list {loc}: {entry:?} should have source USER"));
            }
        }

        let namespaces = engine.namespace_list(&pool()).unwrap_or_else(|e| self.fail(format!("namespace list: {e}")));
        let got: Vec<(String, u64)> = namespaces.iter().map(|n| (n.name.to_string(), n.image_count)).collect();
        let count =
            self.model.images.values().filter(|m| m.trash.is_none() && !m.spec.namespace().is_default()).count();
        let expected = vec![(NAMED_NS.to_owned(), count as u64)];
        if got != expected {
            self.fail(format!("namespace list: (name, images) {got:?}, expected {expected:?}"));
        }

        for id in self.model.heads() {
            let m = self.model.image(&id);
            for snap in &m.snaps {
                let spec = snap_spec(&m.spec, &snap.name);
                let children =
                    engine.snap_children(&spec).unwrap_or_else(|e| self.fail(format!("snap children {spec}: {e}")));
                let mut got: Vec<(String, bool)> = children.iter().map(|c| (c.image_id.clone(), c.in_trash)).collect();
                got.sort();
                let expected: Vec<(String, bool)> = self
                    .model
                    .children(&id, &snap.name)
                    .into_iter()
                    .map(|child| {
                        let in_trash = self.model.image(&child).trash.is_some();
                        (child, in_trash)
                    })
                    .collect();
                if got != expected {
                    self.fail(format!("snap children {spec}: (id, in trash) {got:?}, expected {expected:?}"));
                }
            }
        }
    }

    fn check_all(&self) {
        self.check_lists();
        for id in self.model.heads() {
            self.check_image(&id);
        }
    }

    fn reopen(&mut self) {
        self.held = None;
        self.engine = None;
        let engine = Engine::open(self.dir.path(), self.clock.clone() as Arc<dyn Clock>)
            .unwrap_or_else(|e| self.fail(format!("reopen: {}: {e}", e.kind())));
        self.engine = Some(engine);
    }

    /// A live image picked by index, with its spec; `None` (and a note) when there is none.
    fn pick_head(&mut self, sel: u16, what: &str) -> Option<(String, ImageSpec)> {
        match pick(&self.model.heads(), sel) {
            Some(id) => {
                let spec = self.model.image(&id).spec.clone();
                Some((id, spec))
            }
            None => {
                self.note(format!("({what}: no image, skipped)"));
                None
            }
        }
    }

    /// A snapshot of a live image picked by index among all of them, in image then id order.
    fn pick_snap(&mut self, sel: u16, what: &str) -> Option<(String, SnapSpec)> {
        let snaps: Vec<(String, SnapSpec)> = self
            .model
            .heads()
            .into_iter()
            .flat_map(|id| {
                let m = self.model.image(&id);
                let specs: Vec<SnapSpec> = m.snaps.iter().map(|s| snap_spec(&m.spec, &s.name)).collect();
                specs.into_iter().map(move |spec| (id.clone(), spec))
            })
            .collect();
        let picked = pick(&snaps, sel);
        if picked.is_none() {
            self.note(format!("({what}: no snapshot, skipped)"));
        }
        picked
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { ns, name, size, layout } => self.create(*ns, *name, *size, *layout),
            Op::Write { img, at, seed, fua } => self.write(*img, *at, *seed, *fua),
            Op::Zero { img, at, how, fua } => self.zero(*img, *at, *how, *fua),
            Op::PastEnd { img, len, write } => self.past_end(*img, *len, *write),
            Op::WriteReadOnly { img, snap } => self.write_read_only(*img, *snap),
            Op::Read { img, at, via_held } => self.read(*img, *at, *via_held),
            Op::Flush { img } => self.flush(*img),
            Op::Hold { img } => self.hold(*img),
            Op::Release => {
                if let Some(held) = self.held.take() {
                    let spec = self.model.image(&held.id).spec.clone();
                    self.note(format!("release {spec}"));
                }
            }
            Op::SnapCreate { img, name } => self.snap_create(*img, *name),
            Op::SnapProtect { snap } => self.snap_protect(*snap),
            Op::SnapUnprotect { snap } => self.snap_unprotect(*snap),
            Op::SnapRemove { snap } => self.snap_remove(*snap),
            Op::Rollback { snap } => self.rollback(*snap),
            Op::ReadSnap { snap } => {
                if let Some((id, spec)) = self.pick_snap(*snap, "read snapshot") {
                    self.note(format!("read snapshot {spec}"));
                    let m = self.model.image(&id);
                    let snap = m.snap(&spec.snap).expect("picked snapshot exists").clone();
                    self.check_snapshot(&id, &snap);
                }
            }
            Op::Clone { src, protect_first, ns, name, layout } => {
                self.clone_image(*src, *protect_first, *ns, *name, *layout);
            }
            Op::Flatten { img } => self.flatten(*img),
            Op::Resize { img, size, allow_shrink } => self.resize(*img, *size, *allow_shrink),
            Op::TrashMove { img, defer } => self.trash_move(*img, *defer),
            Op::TrashRestore { entry, rename } => self.trash_restore(*entry, *rename),
            Op::TrashRemove { entry, force } => self.trash_remove(*entry, *force),
            Op::Remove { img } => self.remove(*img),
            Op::Lists => {
                self.note("compare lists");
                self.check_lists();
            }
            Op::CheckAll => {
                self.note("compare everything");
                self.check_all();
            }
            Op::Reopen => {
                self.note("reopen the engine");
                self.reopen();
            }
        }
    }

    fn create(&mut self, ns: bool, name: u8, size: SizeSel, layout: LayoutSel) {
        if self.model.images.len() >= MAX_IMAGES {
            self.note("(create: image limit reached, skipped)");
            return;
        }
        let spec = image_spec(&location(ns), name);
        let size_bytes = size.resolve(MIN_CREATE_BYTES, MAX_IMAGE_BYTES);
        let expect = Expect::from_reasons(if self.model.name_taken(&spec) {
            vec![ErrorKind::AlreadyExists]
        } else {
            Vec::new()
        });
        self.note(format!("create {spec} size {size_bytes} order {:?} striping {:?}", layout.order, layout.striping));
        let options = CreateOptions {
            size_bytes,
            order: layout.order.map(|o| ObjectOrder::new(o).expect("generated order")),
            features: None,
            striping: layout.striping,
            data_pool: None,
        };
        let got = self.engine().image_create(&spec, &options);
        if self.settle("create", &expect, got).is_none() {
            return;
        }
        let id = self.engine().image_info(&spec).unwrap_or_else(|e| self.fail(format!("info after create: {e}"))).id;
        let (order, striping) = layout.expected();
        let image = MImage {
            spec,
            trash: None,
            bytes: vec![0; usize::try_from(size_bytes).expect("size fits usize")],
            snaps: Vec::new(),
            parent: None,
            order,
            striping,
        };
        self.model.images.insert(id, image);
    }

    fn write(&mut self, img: u16, at: Extent, seed: u8, fua: bool) {
        let Some((id, spec)) = self.pick_head(img, "write") else { return };
        let Some((offset, len)) = at.resolve(self.model.image(&id).bytes.len() as u64) else {
            self.note(format!("(write {spec}: empty image, skipped)"));
            return;
        };
        let data = pattern(seed, offset, usize::try_from(len).expect("length fits usize"));
        self.note(format!("write {spec} at {offset} length {len} seed {seed}{}", if fua { " fua" } else { "" }));
        let got = self.with_writer(&id, |io| io.write(offset, &data, durability(fua)));
        if self.settle("write", &Expect::Success, got).is_some() {
            self.model.image_mut(&id).bytes[range(offset, len)].copy_from_slice(&data);
        }
    }

    fn zero(&mut self, img: u16, at: Extent, how: ZeroHow, fua: bool) {
        let Some((id, spec)) = self.pick_head(img, "zero") else { return };
        let Some((offset, len)) = at.resolve(self.model.image(&id).bytes.len() as u64) else {
            self.note(format!("(zero {spec}: empty image, skipped)"));
            return;
        };
        self.note(format!("{how:?} {spec} at {offset} length {len}{}", if fua { " fua" } else { "" }));
        let got = self.with_writer(&id, |io| match how {
            ZeroHow::Discard => io.discard(offset, len, durability(fua)),
            ZeroHow::ZeroesMayUnmap => io.write_zeroes(offset, len, ZeroMode::MayUnmap, durability(fua)),
            ZeroHow::ZeroesKeepAllocated => io.write_zeroes(offset, len, ZeroMode::KeepAllocated, durability(fua)),
        });
        if self.settle("zero", &Expect::Success, got).is_some() {
            self.model.image_mut(&id).bytes[range(offset, len)].fill(0);
        }
    }

    fn past_end(&mut self, img: u16, len: u16, write: bool) {
        let Some((id, spec)) = self.pick_head(img, "past end") else { return };
        let size = self.model.image(&id).bytes.len() as u64;
        let len = 1 + u64::from(len) % 8192;
        let offset = size.saturating_sub(len - 1);
        let kind = if write { "write" } else { "read" };
        self.note(format!("{kind} {spec} at {offset} length {len}, past the end {size}: must be EINVAL"));
        let expect = Expect::Refusal(vec![ErrorKind::InvalidArgument]);
        let got = if write {
            let data = pattern(7, offset, usize::try_from(len).expect("length fits usize"));
            self.with_writer(&id, |io| io.write(offset, &data, Durability::Buffered))
        } else {
            let mut buf = vec![0u8; usize::try_from(len).expect("length fits usize")];
            self.reader(&id).read(offset, &mut buf)
        };
        self.settle(kind, &expect, got);
        self.check_image(&id);
    }

    fn write_read_only(&mut self, img: u16, snap: Option<u16>) {
        let (id, spec, target) = match snap {
            Some(snap) => {
                let Some((id, snap_spec)) = self.pick_snap(snap, "write to a snapshot") else { return };
                (id, snap_spec.image, OpenTarget::Snapshot(snap_spec.snap))
            }
            None => {
                let Some((id, spec)) = self.pick_head(img, "write read-only") else { return };
                (id, spec, OpenTarget::HeadReadOnly)
            }
        };
        self.note(format!("write through {target:?} of {spec}: must be EROFS"));
        let io = self
            .engine()
            .open(&spec, &target, CLIENT)
            .unwrap_or_else(|e| self.fail(format!("open {spec} {target:?}: {}: {e}", e.kind())));
        let len = io.size_bytes().min(4096);
        let expect = Expect::Refusal(vec![ErrorKind::ReadOnly]);
        let data = pattern(9, 0, usize::try_from(len).expect("length fits usize"));
        self.settle("write read-only", &expect, io.write(0, &data, Durability::Buffered));
        self.settle("discard read-only", &expect, io.discard(0, len, Durability::Buffered));
        self.settle("zero read-only", &expect, io.write_zeroes(0, len, ZeroMode::MayUnmap, Durability::Buffered));
        drop(io);
        self.check_image(&id);
    }

    fn read(&mut self, img: u16, at: Extent, via_held: bool) {
        let Some((id, spec)) = self.pick_head(img, "read") else { return };
        let m = self.model.image(&id);
        let Some((offset, len)) = at.resolve(m.bytes.len() as u64) else {
            self.note(format!("(read {spec}: empty image, skipped)"));
            return;
        };
        let held = via_held && self.held_io(&id).is_some();
        self.note(format!("read {spec} at {offset} length {len}{}", if held { " via the held handle" } else { "" }));
        let what = format!("read {spec}");
        let m = self.model.image(&id);
        match self.held_io(&id) {
            Some(io) if via_held => self.check_io(&what, io, &m.bytes, offset, len),
            _ => self.check_io(&what, self.reader(&id).as_ref(), &m.bytes, offset, len),
        }
    }

    fn flush(&mut self, img: u16) {
        let Some((id, spec)) = self.pick_head(img, "flush") else { return };
        self.note(format!("flush {spec}"));
        let got = self.with_writer(&id, |io| io.flush());
        self.settle("flush", &Expect::Success, got);
    }

    fn hold(&mut self, img: u16) {
        let Some((id, spec)) = self.pick_head(img, "hold") else { return };
        if self.held_io(&id).is_some() {
            // A second writer on the same image: the exclusive lock refuses it.
            self.note(format!("open a second writer on {spec}: must be EBUSY"));
            let got = self.engine().open(&spec, &OpenTarget::Head, "second-writer");
            self.settle("second writer", &Expect::Refusal(vec![ErrorKind::Busy]), got);
            return;
        }
        self.held = None;
        self.note(format!("hold {spec} open for writing"));
        let got = self.engine().open(&spec, &OpenTarget::Head, CLIENT);
        if let Some(io) = self.settle("hold", &Expect::Success, got) {
            if io.is_read_only() {
                self.fail(format!("hold {spec}: a head handle is read-only"));
            }
            self.held = Some(Held { id, io });
        }
    }

    fn snap_create(&mut self, img: u16, name: u8) {
        let Some((id, spec)) = self.pick_head(img, "snap create") else { return };
        let snap = snap_name(name);
        let m = self.model.image(&id);
        let expect =
            Expect::from_reasons(if m.snap(&snap).is_some() { vec![ErrorKind::AlreadyExists] } else { vec![] });
        let spec = snap_spec(&spec, &snap);
        self.note(format!("snap create {spec}"));
        let got = self.engine().snap_create(&spec);
        if self.settle("snap create", &expect, got).is_some() {
            let m = self.model.image_mut(&id);
            let bytes = m.bytes.clone();
            m.snaps.push(MSnap { name: snap, bytes, protected: false });
        } else {
            self.check_image(&id);
        }
    }

    fn snap_protect(&mut self, snap: u16) {
        let Some((id, spec)) = self.pick_snap(snap, "protect") else { return };
        let protected = self.model.image(&id).snap(&spec.snap).expect("picked snapshot").protected;
        let expect = Expect::from_reasons(if protected { vec![ErrorKind::Busy] } else { vec![] });
        self.note(format!("protect {spec}{}", if protected { " (already protected: EBUSY)" } else { "" }));
        let got = self.engine().snap_protect(&spec);
        if self.settle("protect", &expect, got).is_some() {
            self.set_protected(&id, &spec.snap, true);
        } else {
            self.check_image(&id);
        }
    }

    fn snap_unprotect(&mut self, snap: u16) {
        let Some((id, spec)) = self.pick_snap(snap, "unprotect") else { return };
        let protected = self.model.image(&id).snap(&spec.snap).expect("picked snapshot").protected;
        let children = self.model.children(&id, &spec.snap).len();
        let expect = if !protected {
            Expect::Refusal(vec![ErrorKind::InvalidArgument])
        } else if children > 0 {
            Expect::Refusal(vec![ErrorKind::Busy])
        } else {
            Expect::Success
        };
        self.note(format!("unprotect {spec} (protected {protected}, {children} children)"));
        let got = self.engine().snap_unprotect(&spec);
        if self.settle("unprotect", &expect, got).is_some() {
            self.set_protected(&id, &spec.snap, false);
        } else {
            self.check_image(&id);
        }
    }

    fn set_protected(&mut self, id: &str, snap: &SnapName, protected: bool) {
        let m = self.model.image_mut(id);
        if let Some(s) = m.snaps.iter_mut().find(|s| &s.name == snap) {
            s.protected = protected;
        }
    }

    fn snap_remove(&mut self, snap: u16) {
        let Some((id, spec)) = self.pick_snap(snap, "snap remove") else { return };
        let protected = self.model.image(&id).snap(&spec.snap).expect("picked snapshot").protected;
        let expect = Expect::from_reasons(if protected { vec![ErrorKind::Busy] } else { vec![] });
        self.note(format!("snap remove {spec}{}", if protected { " (protected: EBUSY)" } else { "" }));
        let got = self.engine().snap_remove(&spec);
        if self.settle("snap remove", &expect, got).is_some() {
            self.model.image_mut(&id).snaps.retain(|s| s.name != spec.snap);
        } else {
            self.check_image(&id);
        }
    }

    fn rollback(&mut self, snap: u16) {
        let Some((id, spec)) = self.pick_snap(snap, "rollback") else { return };
        let held = self.held_io(&id).is_some();
        let expect = Expect::from_reasons(if held { vec![ErrorKind::Busy] } else { vec![] });
        self.note(format!("rollback {spec}{}", if held { " (open for writing: EBUSY)" } else { "" }));
        let got = self.engine().snap_rollback(&spec, &Progress::default());
        if self.settle("rollback", &expect, got).is_some() {
            let m = self.model.image_mut(&id);
            m.bytes = m.snap(&spec.snap).expect("picked snapshot").bytes.clone();
        } else {
            self.check_image(&id);
        }
    }

    fn clone_image(&mut self, src: u16, protect_first: bool, ns: bool, name: u8, layout: Option<LayoutSel>) {
        if self.model.images.len() >= MAX_IMAGES {
            self.note("(clone: image limit reached, skipped)");
            return;
        }
        let Some((parent_id, parent_spec)) = self.pick_snap(src, "clone") else { return };
        let snap = parent_spec.snap.clone();
        let mut protected = self.model.image(&parent_id).snap(&snap).expect("picked snapshot").protected;
        if protect_first && !protected {
            self.note(format!("protect {parent_spec} to clone it"));
            let got = self.engine().snap_protect(&parent_spec);
            self.settle("protect to clone", &Expect::Success, got);
            self.set_protected(&parent_id, &snap, true);
            protected = true;
        }
        let parent = self.model.image(&parent_id);
        let child = image_spec(&location(ns), name);
        let mut reasons = Vec::new();
        if !protected {
            reasons.push(ErrorKind::InvalidArgument);
        }
        if self.model.name_taken(&child) {
            reasons.push(ErrorKind::AlreadyExists);
        }
        let expect = Expect::from_reasons(reasons);
        let (order, striping) = match layout {
            Some(l) => l.expected(),
            None => (parent.order, parent.striping),
        };
        let request = match layout {
            Some(l) => CloneRequest {
                order: l.order.map(|o| ObjectOrder::new(o).expect("generated order")),
                features: None,
                striping: l.striping,
            },
            None => CloneRequest::inherit(),
        };
        self.note(format!(
            "clone {parent_spec} to {child}{}{}",
            match layout {
                Some(l) => format!(" order {:?} striping {:?}", l.order, l.striping),
                None => String::new(),
            },
            if protected { "" } else { " (unprotected)" }
        ));
        let got = self.engine().clone_image(&parent_spec, &child, &request);
        if self.settle("clone", &expect, got).is_none() {
            self.check_image(&parent_id);
            return;
        }
        let id = self.engine().image_info(&child).unwrap_or_else(|e| self.fail(format!("info after clone: {e}"))).id;
        let bytes = self.model.image(&parent_id).snap(&snap).expect("picked snapshot").bytes.clone();
        let image = MImage {
            spec: child,
            trash: None,
            bytes,
            snaps: Vec::new(),
            parent: Some((parent_id, snap)),
            order,
            striping,
        };
        self.model.images.insert(id, image);
    }

    fn flatten(&mut self, img: u16) {
        let Some((id, spec)) = self.pick_head(img, "flatten") else { return };
        let has_parent = self.model.image(&id).parent.is_some();
        let expect = Expect::from_reasons(if has_parent { vec![] } else { vec![ErrorKind::InvalidArgument] });
        self.note(format!("flatten {spec}{}", if has_parent { "" } else { " (no parent: EINVAL)" }));
        let got = self.engine().flatten(&spec, &Progress::default());
        if self.settle("flatten", &expect, got).is_some() {
            self.model.image_mut(&id).parent = None;
        } else {
            self.check_image(&id);
        }
    }

    fn resize(&mut self, img: u16, size: SizeSel, allow_shrink: bool) {
        let Some((id, spec)) = self.pick_head(img, "resize") else { return };
        let current = self.model.image(&id).bytes.len() as u64;
        let new_size = size.resolve(0, MAX_IMAGE_BYTES);
        if new_size == current {
            // Whether a resize to the same size is an error differs between reference versions: not asked.
            self.note(format!("(resize {spec} to its own size {current}, skipped)"));
            return;
        }
        let shrink = new_size < current;
        let expect =
            Expect::from_reasons(if shrink && !allow_shrink { vec![ErrorKind::InvalidArgument] } else { vec![] });
        let policy = if allow_shrink { ResizePolicy::AllowShrink } else { ResizePolicy::GrowOnly };
        self.note(format!("resize {spec} from {current} to {new_size} {policy:?}"));
        let got = self.engine().image_resize(&spec, new_size, policy);
        if self.settle("resize", &expect, got).is_some() {
            let new_len = usize::try_from(new_size).expect("size fits usize");
            self.model.image_mut(&id).bytes.resize(new_len, 0);
        } else {
            self.check_image(&id);
        }
    }

    fn trash_move(&mut self, img: u16, defer: bool) {
        let Some((id, spec)) = self.pick_head(img, "trash move") else { return };
        let held = self.held_io(&id).is_some();
        let expect = Expect::from_reasons(if held { vec![ErrorKind::Busy] } else { vec![] });
        let end = if defer { START.plus_secs(DEFER_SECS) } else { START };
        self.note(format!("trash move {spec} until {}{}", end.secs(), if held { " (open: EBUSY)" } else { "" }));
        let got = self.engine().trash_move(&spec, end);
        match self.settle("trash move", &expect, got) {
            Some(trash_id) => {
                if trash_id != id {
                    self.fail(format!("trash move {spec}: returned id {trash_id}, the image's id is {id}"));
                }
                self.model.image_mut(&id).trash = Some(end);
            }
            None => self.check_image(&id),
        }
    }

    fn trash_restore(&mut self, entry: u16, rename: Option<u8>) {
        let Some(id) = pick(&self.model.trashed(), entry) else {
            self.note("(trash restore: trash is empty, skipped)");
            return;
        };
        let old = self.model.image(&id).spec.clone();
        let new_name = rename.map(|n| image_spec(&old.location, n).image);
        let dest = ImageSpec { location: old.location.clone(), image: new_name.clone().unwrap_or(old.image.clone()) };
        let expect =
            Expect::from_reasons(if self.model.name_taken(&dest) { vec![ErrorKind::AlreadyExists] } else { vec![] });
        self.note(format!("trash restore {id} ({old}) as {dest}"));
        let got = self.engine().trash_restore(&old.location, &id, new_name.as_ref());
        if self.settle("trash restore", &expect, got).is_some() {
            let m = self.model.image_mut(&id);
            m.spec = dest;
            m.trash = None;
            self.check_image(&id);
        } else {
            // The entry stays in the trash and the image holding the name is untouched.
            self.check_lists();
        }
    }

    fn trash_remove(&mut self, entry: u16, force: bool) {
        let Some(id) = pick(&self.model.trashed(), entry) else {
            self.note("(trash remove: trash is empty, skipped)");
            return;
        };
        let m = self.model.image(&id);
        let spec = m.spec.clone();
        let mut reasons = Vec::new();
        if !force && m.trash.is_some_and(|end| end > self.clock.now()) {
            reasons.push(ErrorKind::NotPermitted);
        }
        if !m.snaps.is_empty() {
            reasons.push(ErrorKind::NotEmpty);
        }
        let snapshots = m.snaps.len();
        let expect = Expect::from_reasons(reasons);
        let how = if force { TrashForce::Force } else { TrashForce::RespectDeferment };
        self.note(format!("trash remove {id} ({spec}) {how:?}, {snapshots} snapshots"));
        let got = self.engine().trash_remove(&spec.location, &id, how, &Progress::default());
        if self.settle("trash remove", &expect, got).is_some() {
            self.model.images.remove(&id);
        } else {
            self.check_lists();
        }
    }

    fn remove(&mut self, img: u16) {
        let Some((id, spec)) = self.pick_head(img, "remove") else { return };
        let mut reasons = Vec::new();
        if self.held_io(&id).is_some() {
            reasons.push(ErrorKind::Busy);
        }
        if !self.model.image(&id).snaps.is_empty() {
            reasons.push(ErrorKind::NotEmpty);
        }
        let expect = Expect::from_reasons(reasons);
        self.note(format!("remove {spec} (expect {expect:?})"));
        let got = self.engine().image_remove(&spec, &Progress::default());
        if self.settle("remove", &expect, got).is_some() {
            self.model.images.remove(&id);
        } else {
            self.check_image(&id);
        }
    }

    /// Closes everything, reopens the engine, compares it all again, closes it and runs fsck on the directory.
    fn finish(mut self) {
        self.note("reopen the engine and compare everything");
        self.reopen();
        self.check_all();
        self.engine = None;
        self.note("fsck");
        match basalt_engine::fsck::fsck(self.dir.path()) {
            Ok(report) => {
                if !report.is_clean() {
                    self.fail(format!("fsck found errors: {:?}", report.errors));
                }
            }
            Err(e) => self.fail(format!("fsck failed to run: {}: {e}", e.kind())),
        }
    }
}

/// Runs one sequence against a fresh engine and the model, then checks everything after a reopen and fsck.
fn run(ops: &[Op]) {
    let mut harness = Harness::new();
    for op in ops {
        harness.apply(op);
    }
    harness.finish();
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=2000 makes a soak run; otherwise a few dozen cases keep the suite fast.
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 64 },
        // Failures become named regression tests below, not files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_byte_model(first in vec(create_op(), 1..=2), rest in vec(op(), 0..40)) {
        // Start with an image or two, so the first steps have something to work on.
        let mut ops = first;
        ops.extend(rest);
        run(&ops);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic sequences: the scenarios the random test must keep covering, and regressions it found
// ---------------------------------------------------------------------------------------------------------------

fn block(off: u32, len: u32) -> Extent {
    Extent { align: Align::Block, off, len }
}

fn whole() -> Extent {
    Extent { align: Align::Whole, off: 0, len: 0 }
}

fn size(bytes: u32) -> SizeSel {
    SizeSel { unit: 1, raw: bytes }
}

const DEFAULT_LAYOUT: LayoutSel = LayoutSel { order: None, striping: None };

/// Shrinking and growing again must expose zeros, on the head and on a clone, while snapshots keep the old bytes.
#[test]
fn shrink_then_grow_reads_zeros_and_snapshots_keep_old_bytes() {
    let raw = |bytes: u64| u32::try_from(bytes - MIN_CREATE_BYTES).expect("small size");
    run(&[
        Op::Create { ns: false, name: 0, size: size(raw(256 << 10)), layout: DEFAULT_LAYOUT },
        Op::Write { img: 0, at: whole(), seed: 1, fua: false },
        Op::SnapCreate { img: 0, name: 0 },
        Op::SnapProtect { snap: 0 },
        Op::Clone { src: 0, protect_first: true, ns: true, name: 1, layout: None },
        // Heads sort by spec: rbd/i0 first, rbd/ns1/i1 second.
        Op::Resize { img: 0, size: size(4096), allow_shrink: true },
        Op::Resize { img: 1, size: size(10_000), allow_shrink: true },
        Op::Resize { img: 0, size: size(300 << 10), allow_shrink: false },
        Op::Resize { img: 1, size: size(200 << 10), allow_shrink: false },
        Op::CheckAll,
        Op::Rollback { snap: 0 },
        Op::Flatten { img: 1 },
        Op::SnapUnprotect { snap: 0 },
    ]);
}

/// Every refusal the random test relies on, in one sequence, each leaving the model unchanged.
#[test]
fn refusals_leave_images_unchanged() {
    run(&[
        Op::Create { ns: false, name: 0, size: size(0), layout: LayoutSel { order: Some(12), striping: None } },
        Op::Write { img: 0, at: block(1, 3), seed: 5, fua: true },
        Op::Create { ns: false, name: 0, size: size(0), layout: DEFAULT_LAYOUT },
        Op::SnapCreate { img: 0, name: 0 },
        Op::SnapCreate { img: 0, name: 0 },
        Op::Clone { src: 0, protect_first: false, ns: false, name: 1, layout: None },
        Op::SnapProtect { snap: 0 },
        Op::SnapProtect { snap: 0 },
        Op::SnapRemove { snap: 0 },
        Op::Clone { src: 0, protect_first: true, ns: false, name: 1, layout: None },
        Op::SnapUnprotect { snap: 0 },
        Op::Hold { img: 0 },
        Op::Hold { img: 0 },
        Op::Rollback { snap: 0 },
        Op::TrashMove { img: 0, defer: false },
        Op::Remove { img: 0 },
        Op::PastEnd { img: 0, len: 100, write: true },
        Op::PastEnd { img: 0, len: 100, write: false },
        Op::WriteReadOnly { img: 0, snap: None },
        Op::WriteReadOnly { img: 0, snap: Some(0) },
        Op::Resize { img: 0, size: size(4096), allow_shrink: false },
        Op::Release,
        Op::Flatten { img: 0 },
        Op::Remove { img: 0 },
        Op::TrashMove { img: 0, defer: true },
        Op::TrashRemove { entry: 0, force: false },
        Op::Create { ns: false, name: 0, size: size(0), layout: DEFAULT_LAYOUT },
        Op::TrashRestore { entry: 0, rename: None },
        Op::TrashRestore { entry: 0, rename: Some(2) },
        Op::CheckAll,
    ]);
}

/// Clones with their own layout read through a parent with another one; a clone of a clone reads through both.
#[test]
fn clones_across_layouts_and_generations() {
    let striped = LayoutSel { order: Some(14), striping: Some((4096, 3)) };
    run(&[
        Op::Create { ns: false, name: 0, size: size(100_000), layout: striped },
        Op::Write { img: 0, at: Extent { align: Align::Byte, off: 777, len: 50_000 }, seed: 3, fua: false },
        Op::SnapCreate { img: 0, name: 0 },
        Op::SnapProtect { snap: 0 },
        Op::Clone {
            src: 0,
            protect_first: true,
            ns: true,
            name: 1,
            layout: Some(LayoutSel { order: Some(12), striping: Some((4096, 1)) }),
        },
        Op::Write { img: 1, at: Extent { align: Align::Sector, off: 9, len: 20 }, seed: 4, fua: true },
        Op::SnapCreate { img: 1, name: 1 },
        // Snapshots in order: rbd/i0@s0, rbd/ns1/i1@s1.
        Op::SnapProtect { snap: 1 },
        Op::Clone { src: 1, protect_first: true, ns: false, name: 2, layout: None },
        Op::Write { img: 0, at: whole(), seed: 8, fua: false },
        // Heads now sort as rbd/i0, rbd/i2 (the grandchild), rbd/ns1/i1.
        Op::Zero { img: 1, at: Extent { align: Align::Tail, off: 0, len: 9000 }, how: ZeroHow::Discard, fua: false },
        Op::TrashMove { img: 0, defer: false },
        Op::CheckAll,
        // With rbd/i0 in the trash, index 1 is rbd/ns1/i1, whose parent is now trashed.
        Op::Flatten { img: 1 },
        Op::Reopen,
        Op::TrashRestore { entry: 0, rename: None },
    ]);
}

/// Regression: removing a trashed image took its snapshots with it. The reference refuses (ENOTEMPTY, "image has
/// snapshots"), with or without force: force only overrides the deferment, and `trash purge` leaves such images.
#[test]
fn trash_remove_refuses_an_image_with_snapshots() {
    let harness = Harness::new();
    let engine = harness.engine();
    let spec = ImageSpec::parse("rbd/img").expect("valid spec");
    engine.image_create(&spec, &CreateOptions::with_size(64 << 10)).expect("create");
    engine.snap_create(&SnapSpec::parse("rbd/img@s").expect("valid spec")).expect("snap create");
    let id = engine.trash_move(&spec, START).expect("trash move");
    let loc = location(false);
    for force in [TrashForce::RespectDeferment, TrashForce::Force] {
        let err = engine
            .trash_remove(&loc, &id, force, &Progress::default())
            .expect_err("an image with snapshots must stay in the trash");
        assert_eq!(err.kind(), ErrorKind::NotEmpty, "{force:?}: {err}");
    }
    let trash = engine.trash_list(&loc).expect("trash list");
    assert_eq!(trash.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
}

/// Regression: removing a trashed image also deleted the name entry of the live image that had taken its name
/// since, so that image vanished from `image_list` and could no longer be opened by name.
#[test]
fn trash_remove_keeps_the_name_of_a_new_image_with_the_same_name() {
    let mut harness = Harness::new();
    let spec = ImageSpec::parse("rbd/img").expect("valid spec");
    let loc = location(false);
    let (old_id, new_id) = {
        let engine = harness.engine();
        engine.image_create(&spec, &CreateOptions::with_size(64 << 10)).expect("create");
        let old_id = engine.trash_move(&spec, START).expect("trash move");
        engine.image_create(&spec, &CreateOptions::with_size(64 << 10)).expect("create again under the same name");
        let new_id = engine.image_info(&spec).expect("info").id;
        engine.trash_remove(&loc, &old_id, TrashForce::Force, &Progress::default()).expect("trash remove");
        (old_id, new_id)
    };
    assert_ne!(old_id, new_id);
    for when in ["before reopening", "after reopening"] {
        let engine = harness.engine();
        let listed: Vec<(String, String)> =
            engine.image_list(&loc).expect("image list").into_iter().map(|e| (e.name.to_string(), e.id)).collect();
        assert_eq!(listed, [("img".to_owned(), new_id.clone())], "{when}");
        assert_eq!(engine.image_info(&spec).expect("info by name").id, new_id, "{when}");
        harness.reopen();
    }
}
