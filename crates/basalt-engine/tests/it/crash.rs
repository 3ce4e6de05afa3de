//! Crash consistency and fault injection through the simulated disk: a power cut at every mutating I/O of each
//! operation, and a single EIO or ENOSPC at every I/O of a few, must leave a store that opens, passes fsck, keeps
//! everything acknowledged, and shows each operation either fully applied or not at all.
//!
//! Each sweep first runs the operation without faults to learn the visible state before ("old") and after ("new")
//! and how many mutating I/Os it does; then, for every one of those I/Os, it rebuilds the same base state on a fresh
//! disk, arms the fault there, runs the operation, and compares what a reopened engine shows with old and new.
//! Failures are collected over the whole sweep so one report shows every broken crash point.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use basalt_core::config::ConfigLevel;
use basalt_core::{
    Backend, Clock, CloneRequest, CopyRequest, CreateOptions, Durability, Error, ErrorKind, Features, ImageIo,
    ImageSpec, ManualClock, Namespace, ObjectOrder, OpenTarget, PoolName, PoolNs, Progress, ResizePolicy, SnapName,
    SnapSpec, Timestamp, TrashForce,
};
use basalt_engine::Engine;
use basalt_engine::fsck::fsck_vfs;
use basalt_engine::sim::{CrashSurvivors, Fault, SimVfs};
use basalt_engine::vfs::Vfs;

const ROOT: &str = "/store";
const NOW: u64 = 1_700_000_000;
/// Tiny images keep every sweep cheap: 256 KiB in 64 KiB objects is 4 objects of 16 blocks.
const IMAGE_SIZE: u64 = 256 << 10;
const ORDER: u8 = 16;
const BLOCK: usize = 4096;
/// The object size of [`tiny_image`] (order 16).
const OBJECT: usize = 1 << ORDER;
/// The most failures one sweep prints; the count of all of them is always reported.
const MAX_REPORTED: usize = 12;

// ---------------------------------------------------------------------------------------------------------------
// Names and small helpers
// ---------------------------------------------------------------------------------------------------------------

fn pool() -> PoolName {
    PoolName::new("rbd").expect("valid pool name")
}

fn default_loc() -> PoolNs {
    PoolNs::new(pool(), Namespace::default_ns())
}

fn spec(name: &str) -> ImageSpec {
    ImageSpec::new(pool(), Namespace::default_ns(), basalt_core::ImageName::new(name).expect("valid image name"))
}

fn snap(image: &str, name: &str) -> SnapSpec {
    SnapSpec { image: spec(image), snap: SnapName::new(name).expect("valid snapshot name") }
}

fn ns1() -> PoolNs {
    PoolNs::new(pool(), Namespace::new("ns1").expect("valid namespace"))
}

/// Deterministic non-zero bytes that differ per seed and per block, so digests tell writes apart.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i as u64 * 31 + u64::from(seed) * 97 + (i as u64 >> 12) * 13) % 251 + 1) as u8).collect()
}

fn vfs_arc(vfs: &SimVfs) -> Arc<dyn Vfs> {
    Arc::new(vfs.clone())
}

fn open_engine(vfs: &SimVfs) -> basalt_core::Result<Engine> {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(NOW)));
    Engine::open_with_vfs(vfs_arc(vfs), Path::new(ROOT), clock)
}

fn tiny_image() -> CreateOptions {
    let mut options = CreateOptions::with_size(IMAGE_SIZE);
    options.order = Some(ObjectOrder::new(ORDER).expect("valid order"));
    options
}

/// Writes each `(offset, bytes)` buffered, then flushes: the data is acknowledged as durable once this returns.
fn write_flushed(engine: &Engine, image: &str, writes: &[(u64, Vec<u8>)]) -> basalt_core::Result<()> {
    let io = engine.open(&spec(image), &OpenTarget::Head, "crash-test")?;
    for (offset, data) in writes {
        io.write(*offset, data, Durability::Buffered)?;
    }
    io.flush()
}

/// The base data: a run at the start, one across the first object boundary, a partial block near the end.
fn data_a() -> Vec<(u64, Vec<u8>)> {
    vec![(0, pattern(1, 8192)), (60 << 10, pattern(2, 20 << 10)), (200 << 10, pattern(3, 5000))]
}

/// Data written after the first snapshot, so the head and the snapshot differ (partly over A, partly new).
fn data_b() -> Vec<(u64, Vec<u8>)> {
    vec![(4096, pattern(4, 8192)), (130 << 10, pattern(5, 3000))]
}

/// The clone's own data, over part of what it sees of its parent.
fn data_c() -> Vec<(u64, Vec<u8>)> {
    vec![(2048, pattern(6, 4096)), (100 << 10, pattern(7, 8192))]
}

// ---------------------------------------------------------------------------------------------------------------
// Base states
// ---------------------------------------------------------------------------------------------------------------

/// What exists before the operation under test; each state is built only through acknowledged operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// Pool `rbd` tagged `rbd`; image `img` with data A flushed.
    Image,
    /// `Image` plus snapshot `img@s1` of A, then data B flushed to the head.
    Snapshot,
    /// `Snapshot` with `s1` protected.
    Protected,
    /// `Protected` plus clone `child` of `img@s1` with its own data C flushed.
    Clone,
    /// `Image` moved to the trash.
    Trashed,
    /// `Image` plus namespace `rbd/ns1`.
    Namespace,
}

fn build_base(base: Base) -> (SimVfs, Engine) {
    build_base_on(base, false)
}

/// [`build_base`] on a disk that stands for one with `direct` I/O to layer files ([`SimVfs::direct_io`]).
fn build_base_on(base: Base, direct: bool) -> (SimVfs, Engine) {
    let vfs = SimVfs::new().direct_io(direct);
    let engine = open_engine(&vfs).expect("a fresh store opens");
    engine.pool_create(&pool()).expect("create pool");
    engine.pool_application_enable(&pool(), "rbd").expect("tag pool");
    engine.image_create(&spec("img"), &tiny_image()).expect("create image");
    write_flushed(&engine, "img", &data_a()).expect("write base data");
    match base {
        Base::Image => {}
        Base::Snapshot | Base::Protected | Base::Clone => {
            engine.snap_create(&snap("img", "s1")).expect("create snapshot");
            write_flushed(&engine, "img", &data_b()).expect("write after snapshot");
            if base != Base::Snapshot {
                engine.snap_protect(&snap("img", "s1")).expect("protect snapshot");
            }
            if base == Base::Clone {
                engine.clone_image(&snap("img", "s1"), &spec("child"), &CloneRequest::inherit()).expect("clone");
                write_flushed(&engine, "child", &data_c()).expect("write to clone");
            }
        }
        Base::Trashed => {
            engine.trash_move(&spec("img"), Timestamp(NOW + 3600)).expect("move to trash");
        }
        Base::Namespace => engine.namespace_create(&ns1()).expect("create namespace"),
    }
    (vfs, engine)
}

// ---------------------------------------------------------------------------------------------------------------
// Operations under test
// ---------------------------------------------------------------------------------------------------------------

/// How the state after an interrupted operation is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// Metadata operation: the whole visible state is exactly old or exactly new.
    Atomic,
    /// Data-path operation that was not acknowledged: metadata is old or new, and each 4 KiB block of each image
    /// and snapshot holds its old or its new content (unflushed writes may land in any combination of blocks).
    Blockwise,
}

#[derive(Clone, Copy)]
struct Op {
    name: &'static str,
    base: Base,
    judge: Judge,
    run: fn(&Engine) -> basalt_core::Result<()>,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

fn only_trash_id(engine: &Engine) -> basalt_core::Result<String> {
    let entries = engine.trash_list(&default_loc())?;
    match entries.as_slice() {
        [entry] => Ok(entry.id.clone()),
        _ => Err(Error::invalid(format!("expected one trash entry, found {}", entries.len()))),
    }
}

const IMAGE_CREATE: Op = Op {
    name: "image create",
    base: Base::Image,
    judge: Judge::Atomic,
    run: |e| {
        let mut options = CreateOptions::with_size(128 << 10);
        options.order = Some(ObjectOrder::new(12).expect("valid order"));
        e.image_create(&spec("new"), &options)
    },
};

/// Part over A's blocks (in place), part into blocks nothing holds yet, with unaligned edges.
const WRITE_FLUSH: Op = Op {
    name: "write+flush",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(6000, &pattern(10, 20_000), Durability::Buffered)?;
        io.write(150 << 10, &pattern(11, 4096), Durability::Buffered)?;
        io.flush()
    },
};

/// Only overwrites of blocks the head's layer already holds: no allocation changes, so nothing but the data file
/// has to be made durable by the flush.
const OVERWRITE_FLUSH: Op = Op {
    name: "overwrite+flush",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(0, &pattern(12, 8192), Durability::Buffered)?;
        io.write(64 << 10, &pattern(13, 1000), Durability::Buffered)?;
        io.flush()
    },
};

/// Unflushed in-place overwrites of A's blocks of every kind (whole blocks, a partial block, a whole object logged
/// by checksum, a block at the end), each block written once, then a flush: the data and checksum writes of an overwrite reach the
/// disk in any order, and no cut may leave a block that fails its checksum.
const OVERWRITES_FLUSH: Op = Op {
    name: "overwrites+flush",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(0, &pattern(30, 8192), Durability::Buffered)?;
        io.write(64 << 10, &pattern(31, 64 << 10), Durability::Buffered)?;
        io.write(61 << 10, &pattern(32, 1500), Durability::Buffered)?;
        io.write(200 << 10, &pattern(33, 4096), Durability::Buffered)?;
        io.flush()
    },
};

/// Whole objects (64 KiB each here), so the journal logs block checksums rather than the bytes: part over A's blocks
/// (in place), part new.
const LARGE_WRITE_FLUSH: Op = Op {
    name: "large write+flush",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(64 << 10, &pattern(15, 128 << 10), Durability::Buffered)?;
        io.flush()
    },
};

/// One whole object with FUA, over A's first blocks.
const LARGE_WRITE_FUA: Op = Op {
    name: "large write FUA",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(0, &pattern(16, 64 << 10), Durability::ForceUnitAccess)
    },
};

const WRITE_FUA: Op = Op {
    name: "write FUA",
    base: Base::Image,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(1000, &pattern(14, 6000), Durability::ForceUnitAccess)
    },
};

/// Whole blocks of A, a partial block of A, and a range past A: after a snapshot, so zero markers are needed.
const DISCARD_FLUSH: Op = Op {
    name: "discard+flush",
    base: Base::Snapshot,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.discard(0, 8192, Durability::Buffered)?;
        io.discard(62 << 10, 3000, Durability::Buffered)?;
        io.discard(196 << 10, 16 << 10, Durability::Buffered)?;
        io.flush()
    },
};

const SNAP_CREATE: Op = Op {
    name: "snapshot create",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.snap_create(&snap("img", "s2")),
};

const SNAP_PROTECT: Op = Op {
    name: "snapshot protect",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.snap_protect(&snap("img", "s1")),
};

const CLONE: Op = Op {
    name: "clone",
    base: Base::Protected,
    judge: Judge::Atomic,
    run: |e| e.clone_image(&snap("img", "s1"), &spec("child"), &CloneRequest::inherit()),
};

const FLATTEN: Op = Op {
    name: "flatten",
    base: Base::Clone,
    judge: Judge::Atomic,
    run: |e| e.flatten(&spec("child"), &Progress::new()),
};

const RESIZE_GROW: Op = Op {
    name: "resize grow",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.image_resize(&spec("img"), 384 << 10, ResizePolicy::GrowOnly),
};

/// To a size that is neither object- nor block-aligned, cutting through A's middle run.
const RESIZE_SHRINK: Op = Op {
    name: "resize shrink",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.image_resize(&spec("img"), 70_000, ResizePolicy::AllowShrink),
};

const ROLLBACK: Op = Op {
    name: "rollback",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.snap_rollback(&snap("img", "s1"), &Progress::new()),
};

const SNAP_REMOVE: Op = Op {
    name: "snapshot remove",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.snap_remove(&snap("img", "s1")),
};

const TRASH_MOVE: Op = Op {
    name: "trash move",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.trash_move(&spec("img"), Timestamp(NOW + 3600)).map(drop),
};

const TRASH_RESTORE: Op = Op {
    name: "trash restore",
    base: Base::Trashed,
    judge: Judge::Atomic,
    run: |e| e.trash_restore(&default_loc(), &only_trash_id(e)?, None),
};

const TRASH_REMOVE: Op = Op {
    name: "trash remove (force)",
    base: Base::Trashed,
    judge: Judge::Atomic,
    run: |e| e.trash_remove(&default_loc(), &only_trash_id(e)?, TrashForce::Force, &Progress::new()),
};

const IMAGE_REMOVE: Op = Op {
    name: "image remove",
    base: Base::Image,
    judge: Judge::Atomic,
    run: |e| e.image_remove(&spec("img"), &Progress::new()),
};

const IMAGE_COPY: Op = Op {
    name: "image copy",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.image_copy(&spec("img"), &CopyRequest::to(spec("copy")), &Progress::new()),
};

const NAMESPACE_CREATE: Op =
    Op { name: "namespace create", base: Base::Image, judge: Judge::Atomic, run: |e| e.namespace_create(&ns1()) };

const NAMESPACE_REMOVE: Op =
    Op { name: "namespace remove", base: Base::Namespace, judge: Judge::Atomic, run: |e| e.namespace_remove(&ns1()) };

const CONFIG_SET: Op = Op {
    name: "config set",
    base: Base::Image,
    judge: Judge::Atomic,
    run: |e| e.config_set(&ConfigLevel::Image(spec("img")), "rbd_qos_iops_limit", "100"),
};

/// A snapshot taken while the client has unflushed overwrites: taking a snapshot flushes the image, so the snapshot
/// must hold what the head showed at that moment (blocks 1-2 are the head layer's own since data B: in place).
const OVERWRITE_THEN_SNAP: Op = Op {
    name: "buffered overwrite + snapshot create",
    base: Base::Snapshot,
    judge: Judge::Blockwise,
    run: |e| {
        let io = e.open(&spec("img"), &OpenTarget::Head, "crash-test")?;
        io.write(4096, &pattern(15, 8192), Durability::Buffered)?;
        e.snap_create(&snap("img", "s2"))
    },
};

const SNAP_UNPROTECT: Op = Op {
    name: "snapshot unprotect",
    base: Base::Protected,
    judge: Judge::Atomic,
    run: |e| e.snap_unprotect(&snap("img", "s1")),
};

const SNAP_RENAME: Op = Op {
    name: "snapshot rename",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.snap_rename(&snap("img", "s1"), &SnapName::new("renamed").expect("valid snapshot name")),
};

const IMAGE_RENAME: Op = Op {
    name: "image rename",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.image_rename(&spec("img"), &basalt_core::ImageName::new("img2").expect("valid image name")),
};

const METADATA_SET: Op = Op {
    name: "metadata set",
    base: Base::Image,
    judge: Judge::Atomic,
    run: |e| e.image_metadata_set(&spec("img"), "owner", "crash-test"),
};

const FEATURES_DISABLE: Op = Op {
    name: "features disable",
    base: Base::Image,
    judge: Judge::Atomic,
    run: |e| e.image_features_disable(&spec("img"), Features::FAST_DIFF.union(Features::OBJECT_MAP)),
};

const DEEP_COPY: Op = Op {
    name: "deep copy",
    base: Base::Snapshot,
    judge: Judge::Atomic,
    run: |e| e.image_deep_copy(&spec("img"), &spec("dcopy"), &Progress::new()),
};

const TRASH_PURGE: Op = Op {
    name: "trash purge",
    base: Base::Trashed,
    judge: Judge::Atomic,
    // An entry that could not be removed is reported in `skipped`, not as an error: then nothing was acknowledged.
    run: |e| match e.trash_purge(&pool(), Timestamp(NOW + 7200), &Progress::new())?.skipped.into_iter().next() {
        Some((_, err)) => Err(err),
        None => Ok(()),
    },
};

// ---------------------------------------------------------------------------------------------------------------
// The visible state
// ---------------------------------------------------------------------------------------------------------------

/// Content as a digest per 4 KiB block (0 for an all-zero block), so differences print small and compare blockwise.
#[derive(Clone, PartialEq, Eq)]
struct Blocks(Vec<u64>);

impl fmt::Debug for Blocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> =
            self.0.iter().map(|d| if *d == 0 { "0".to_owned() } else { format!("{:06x}", d & 0xff_ffff) }).collect();
        write!(f, "[{}]", shown.join(" "))
    }
}

fn digest(bytes: &[u8]) -> Blocks {
    Blocks(
        bytes
            .chunks(BLOCK)
            .map(|chunk| {
                if chunk.iter().all(|b| *b == 0) {
                    return 0;
                }
                // FNV-1a; never 0 for non-zero content in practice, and 0 is reserved for zero blocks.
                chunk.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
                    | 1
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapObs {
    name: String,
    size: u64,
    protected: bool,
    children: u64,
    data: Blocks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageObs {
    size: u64,
    order: u8,
    features: u64,
    status: &'static str,
    snap_limit: Option<u64>,
    /// `(parent image, parent snapshot, overlap, parent in trash)`.
    parent: Option<(String, String, u64, bool)>,
    metadata: Vec<(String, String)>,
    /// Image-level effective configuration that differs from the built-in default.
    config: Vec<(String, String, &'static str)>,
    snaps: Vec<SnapObs>,
    head: Blocks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TrashObs {
    location: String,
    name: String,
    source: &'static str,
    status: &'static str,
    deferment_end: u64,
}

/// Everything a user can see, minus ids, usage counters and modification times (which legitimately vary).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// `(pool, applications, namespaces)`.
    pools: Vec<(String, Vec<String>, Vec<String>)>,
    /// By `pool/namespace/name`.
    images: BTreeMap<String, ImageObs>,
    trash: Vec<TrashObs>,
    /// Global and pool-level effective configuration that differs from the built-in default.
    config: Vec<(String, String, String)>,
}

fn ctx<T>(what: impl fmt::Display, result: basalt_core::Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {} ({e})", e.kind()))
}

fn read_all(io: &dyn ImageIo) -> basalt_core::Result<Vec<u8>> {
    let mut buf = vec![0u8; io.size_bytes() as usize];
    io.read(0, &mut buf)?;
    Ok(buf)
}

fn non_default(entries: Vec<basalt_core::config::ConfigEntry>) -> Vec<(String, String, &'static str)> {
    entries
        .into_iter()
        .filter(|e| basalt_core::config::option(e.name).map_or(true, |o| o.default != e.value))
        .map(|e| (e.name.to_owned(), e.value, e.source.as_str()))
        .collect()
}

/// Reads the whole visible state through the public API; read-only opens, so observing never writes.
fn observe(engine: &Engine) -> Result<Observed, String> {
    let mut obs = Observed { pools: Vec::new(), images: BTreeMap::new(), trash: Vec::new(), config: Vec::new() };
    for (name, value, source) in non_default(ctx("config list global", engine.config_list(&ConfigLevel::Global))?) {
        obs.config.push(("global".to_owned(), format!("{name}={value}"), source.to_owned()));
    }
    let mut pools = ctx("pool list", engine.pool_list())?;
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    for info in pools {
        let pool = info.name.clone();
        let mut namespaces: Vec<Namespace> =
            ctx("namespace list", engine.namespace_list(&pool))?.into_iter().map(|n| n.name).collect();
        namespaces.sort();
        let mut applications = info.applications.clone();
        applications.sort();
        obs.pools.push((pool.to_string(), applications, namespaces.iter().map(ToString::to_string).collect()));
        let pool_config = ctx("config list pool", engine.config_list(&ConfigLevel::Pool(pool.clone())))?;
        for (name, value, source) in non_default(pool_config) {
            obs.config.push((format!("pool {pool}"), format!("{name}={value}"), source.to_owned()));
        }
        let locations =
            std::iter::once(Namespace::default_ns()).chain(namespaces).map(|ns| PoolNs::new(pool.clone(), ns));
        for location in locations {
            for entry in ctx(format!("trash list {location}"), engine.trash_list(&location))? {
                obs.trash.push(TrashObs {
                    location: location.to_string(),
                    name: entry.name.to_string(),
                    source: entry.source.as_str(),
                    status: entry.status.as_str(),
                    deferment_end: entry.deferment_end_time.0,
                });
            }
            for entry in ctx(format!("image list {location}"), engine.image_list(&location))? {
                let image = ImageSpec::new(location.pool.clone(), location.namespace.clone(), entry.name.clone());
                obs.images.insert(
                    format!("{}/{}/{}", location.pool, location.namespace, entry.name),
                    observe_image(engine, &image)?,
                );
            }
        }
    }
    obs.trash.sort_by(|a, b| (&a.location, &a.name).cmp(&(&b.location, &b.name)));
    Ok(obs)
}

fn observe_image(engine: &Engine, image: &ImageSpec) -> Result<ImageObs, String> {
    let info = ctx(format!("image info {image}"), engine.image_info(image))?;
    let head = ctx(format!("open {image} read-only"), engine.open(image, &OpenTarget::HeadReadOnly, "observer"))?;
    let head = digest(&ctx(format!("read {image}"), read_all(head.as_ref()))?);
    let mut snaps = Vec::new();
    for s in ctx(format!("snap list {image}"), engine.snap_list(image))? {
        let io = ctx(
            format!("open {image}@{}", s.name),
            engine.open(image, &OpenTarget::Snapshot(s.name.clone()), "observer"),
        )?;
        let data = digest(&ctx(format!("read {image}@{}", s.name), read_all(io.as_ref()))?);
        snaps.push(SnapObs {
            name: s.name.to_string(),
            size: s.size_bytes,
            protected: s.protected,
            children: s.children,
            data,
        });
    }
    let mut metadata = ctx(format!("metadata list {image}"), engine.image_metadata_list(image))?;
    metadata.sort();
    let config =
        non_default(ctx(format!("config list {image}"), engine.config_list(&ConfigLevel::Image(image.clone())))?)
            .into_iter()
            .filter(|(_, _, source)| *source == "image")
            .collect();
    Ok(ImageObs {
        size: info.size_bytes,
        order: info.order.get(),
        features: info.features.bits(),
        status: info.status.as_str(),
        snap_limit: info.snap_limit,
        parent: info.parent.map(|p| (p.image.to_string(), p.snap.to_string(), p.overlap_bytes, p.in_trash)),
        metadata,
        config,
        snaps,
        head,
    })
}

/// Lines of the pretty forms that only one side has, to show what differs without printing both states whole.
fn diff(got: &Observed, expected: &Observed) -> String {
    let (got, expected) = (format!("{got:#?}"), format!("{expected:#?}"));
    let mut only_expected: Vec<&str> = expected.lines().collect();
    let mut out = Vec::new();
    for line in got.lines() {
        match only_expected.iter().position(|l| *l == line) {
            Some(i) => {
                only_expected.remove(i);
            }
            None => out.push(format!("    got {}", line.trim())),
        }
    }
    out.extend(only_expected.iter().map(|l| format!("    exp {}", l.trim())));
    if out.len() > 8 {
        out.truncate(8);
        out.push("    ...".to_owned());
    }
    out.join("\n")
}

/// The state with every block digest removed, for comparing metadata only.
fn without_data(obs: &Observed) -> Observed {
    let mut obs = obs.clone();
    for image in obs.images.values_mut() {
        image.head = Blocks(Vec::new());
        for s in &mut image.snaps {
            s.data = Blocks(Vec::new());
        }
    }
    obs
}

/// Every block of `got` equals the same block of `old` or of `new`.
fn blockwise_ok(got: &Blocks, old: Option<&Blocks>, new: Option<&Blocks>) -> bool {
    got.0.iter().enumerate().all(|(i, d)| {
        old.and_then(|b| b.0.get(i)).is_some_and(|o| o == d) || new.and_then(|b| b.0.get(i)).is_some_and(|n| n == d)
    })
}

/// Judges a state after a crash or fault: exactly `new` when the operation was acknowledged, else per `judge`.
fn judge(got: &Observed, old: &Observed, new: &Observed, acknowledged: bool, judge: Judge) -> Result<(), String> {
    if got == new || (!acknowledged && got == old) {
        return Ok(());
    }
    if acknowledged {
        return Err(format!("the operation returned Ok but its result is not all there:\n{}", diff(got, new)));
    }
    if judge == Judge::Blockwise {
        let meta = without_data(got);
        if meta == without_data(old) || meta == without_data(new) {
            let torn = got.images.iter().find_map(|(name, image)| {
                let (o, n) = (old.images.get(name), new.images.get(name));
                if !blockwise_ok(&image.head, o.map(|i| &i.head), n.map(|i| &i.head)) {
                    return Some(format!("{name} head"));
                }
                image.snaps.iter().enumerate().find_map(|(k, s)| {
                    let os = o.and_then(|i| i.snaps.get(k)).map(|s| &s.data);
                    let ns = n.and_then(|i| i.snaps.get(k)).map(|s| &s.data);
                    (!blockwise_ok(&s.data, os, ns)).then(|| format!("{name}@{}", s.name))
                })
            });
            return match torn {
                None => Ok(()),
                Some(what) => Err(format!("a block of {what} is neither old nor new:\n{}", diff(got, old))),
            };
        }
    }
    Err(format!("neither old nor new state; against old:\n{}\n  against new:\n{}", diff(got, old), diff(got, new)))
}

// ---------------------------------------------------------------------------------------------------------------
// Checks after a crash
// ---------------------------------------------------------------------------------------------------------------

/// A small proof that the engine still works: a new image takes a FUA write and reads it back.
fn probe(engine: &Engine) -> Result<(), String> {
    let image = spec("probe");
    let mut options = CreateOptions::with_size(64 << 10);
    options.order = Some(ObjectOrder::new(12).expect("valid order"));
    ctx("probe: create image", engine.image_create(&image, &options))?;
    let io = ctx("probe: open", engine.open(&image, &OpenTarget::Head, "probe"))?;
    let data = pattern(99, 5000);
    ctx("probe: write", io.write(3000, &data, Durability::ForceUnitAccess))?;
    let mut back = vec![0u8; data.len()];
    ctx("probe: read", io.read(3000, &mut back))?;
    if back != data {
        return Err("probe: the data read back differs from what was written".to_owned());
    }
    Ok(())
}

/// Every data block of every layer (heads, snapshots, hidden layers) matches its checksum: no crash point leaves a
/// block that reads as EIO, in particular none of an in-place overwrite the cut tore (docs/FORMAT.md, "Checksums").
fn every_block_verifies(engine: &Engine) -> Result<(), String> {
    let report = ctx("scrub", engine.scrub(None, &Progress::default()))?;
    if report.errors.is_empty() { Ok(()) } else { Err(format!("checksum errors after the crash: {:?}", report.errors)) }
}

fn fsck_clean(vfs: &SimVfs) -> Result<(), String> {
    let report = ctx("fsck", fsck_vfs(vfs_arc(vfs), Path::new(ROOT)))?;
    if report.is_clean() { Ok(()) } else { Err(format!("fsck is not clean: {:?}", report.errors)) }
}

/// Reopens an engine on `disk`, judges what it shows, proves it works, closes it and runs fsck.
fn check_disk(disk: &SimVfs, old: &Observed, new: &Observed, acknowledged: bool, how: Judge) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let engine = ctx("reopen", open_engine(disk))?;
        let got = observe(&engine)?;
        judge(&got, old, new, acknowledged, how)?;
        every_block_verifies(&engine)?;
        probe(&engine)?;
        drop(engine);
        fsck_clean(disk)
    }));
    outcome.unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "<non-string panic>".to_owned())
}

fn reopen_and_observe(disk: &SimVfs) -> Observed {
    let engine = open_engine(disk).expect("the store reopens after a crash");
    observe(&engine).unwrap_or_else(|e| panic!("observe after reopen: {e}"))
}

/// The fault-free run of an operation: the states before and after, and where its I/Os start and end.
#[derive(Debug)]
struct Reference {
    base_ops: u64,
    /// Mutating I/Os up to the operation's return.
    returned_ops: u64,
    /// Mutating I/Os up to the engine being dropped (closing may write too).
    end_ops: u64,
    old: Observed,
    /// The state the engine showed after the operation returned Ok: what it acknowledged.
    new: Observed,
}

/// Runs `op` once without faults. A state that does not survive a power cut right after the operation returned
/// is recorded as a failure rather than panicking, so the sweep still runs and reports every other crash point.
fn reference(op: &Op, direct: bool, failures: &mut Failures) -> Reference {
    let (vfs, engine) = build_base_on(op.base, direct);
    let base_ops = vfs.op_count();
    drop(engine);
    // What the base acknowledged must survive losing every unsynced write.
    let old = reopen_and_observe(&vfs.after_crash(CrashSurvivors::None));

    let (vfs, engine) = build_base_on(op.base, direct);
    assert_eq!(vfs.op_count(), base_ops, "{op:?}: building the base state twice must do the same I/O");
    (op.run)(&engine).unwrap_or_else(|e| panic!("{op:?} fails without any fault: {} ({e})", e.kind()));
    let returned_ops = vfs.op_count();
    let new = observe(&engine).unwrap_or_else(|e| panic!("{op:?}: observe after the operation: {e}"));
    assert_eq!(vfs.op_count(), returned_ops, "{op:?}: observing the state must not write");
    drop(engine);
    let end_ops = vfs.op_count();
    let after = reopen_and_observe(&vfs.after_crash(CrashSurvivors::None));
    if after != new {
        failures.add(format!(
            "no fault: the operation returned Ok, then a power cut (unsynced writes lost) changed the state:\n{}",
            diff(&after, &new)
        ));
    }
    assert_ne!(old, new, "{op:?}: the operation must change something visible, or the sweep proves nothing");
    assert!(returned_ops > base_ops, "{op:?}: the operation does no I/O at all");
    Reference { base_ops, returned_ops, end_ops, old, new }
}

/// Collects failures over a sweep and fails once at the end with all of them.
#[derive(Debug, Default)]
struct Failures {
    lines: Vec<String>,
    count: usize,
}

impl Failures {
    fn add(&mut self, line: String) {
        self.count += 1;
        if self.lines.len() < MAX_REPORTED {
            self.lines.push(line);
        }
    }

    fn assert_none(&self, what: &str) {
        assert!(self.count == 0, "{what}: {} failure(s):\n{}", self.count, self.lines.join("\n"));
    }
}

fn seed_for(op: &Op, k: u64) -> u64 {
    op.name
        .bytes()
        .fold(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Cuts the power at every mutating I/O of `op` (including those done while closing the engine after it) and
/// checks the disk as it is after the cut with no, some and all unsynced writes surviving. Returns the number of
/// crash points.
fn sweep_power_cuts(op: &Op) -> u64 {
    sweep_power_cuts_on(op, false)
}

/// [`sweep_power_cuts`] on disks that stand for ones with `direct` I/O to layer files.
fn sweep_power_cuts_on(op: &Op, direct: bool) -> u64 {
    let mut failures = Failures::default();
    let reference = reference(op, direct, &mut failures);
    let points = reference.end_ops - reference.base_ops;
    for k in 0..points {
        let (vfs, engine) = build_base_on(op.base, direct);
        if vfs.op_count() != reference.base_ops {
            failures.add(format!("k={k}: the base state did different I/O ({} ops)", vfs.op_count()));
            continue;
        }
        vfs.inject(reference.base_ops + k, Fault::PowerCut);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let result = (op.run)(&engine);
            drop(engine);
            result
        }));
        let result = match outcome {
            Ok(result) => result,
            Err(panic) => {
                failures.add(format!("k={k}: the operation panicked instead of failing: {}", panic_message(&panic)));
                continue;
            }
        };
        if !vfs.is_powered_off() {
            failures.add(format!("k={k}: the power cut at I/O {} was never reached", reference.base_ops + k));
        }
        let acknowledged = result.is_ok();
        if let Err(e) = &result
            && e.kind() != ErrorKind::Io
        {
            failures.add(format!("k={k}: a power cut surfaced as {} instead of EIO: {e}", e.kind()));
        }
        let seed = seed_for(op, k);
        let survivors = [
            CrashSurvivors::None,
            CrashSurvivors::Random(seed),
            CrashSurvivors::Random(seed.rotate_left(21)),
            CrashSurvivors::Random(seed.rotate_left(42)),
            CrashSurvivors::All,
        ];
        for survivors in survivors {
            let disk = vfs.after_crash(survivors);
            if let Err(why) = check_disk(&disk, &reference.old, &reference.new, acknowledged, op.judge) {
                let returned = if acknowledged { "Ok".to_owned() } else { format!("{result:?}") };
                failures.add(format!(
                    "k={k} (I/O {} of {points}) {survivors:?}, op returned {returned}:\n  {why}",
                    reference.base_ops + k
                ));
            }
        }
    }
    eprintln!("{op:?}: {points} crash points");
    failures.assert_none(&format!("power cuts during {op:?} ({points} crash points)"));
    points
}

// ---------------------------------------------------------------------------------------------------------------
// Power cut sweeps, one test per operation so they run in parallel and fail separately
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn power_cut_during_image_create() {
    sweep_power_cuts(&IMAGE_CREATE);
}

#[test]
fn power_cut_during_write_and_flush() {
    sweep_power_cuts(&WRITE_FLUSH);
}

#[test]
fn power_cut_during_overwrite_and_flush() {
    sweep_power_cuts(&OVERWRITE_FLUSH);
}

#[test]
fn power_cut_during_overwrites_and_flush() {
    sweep_power_cuts(&OVERWRITES_FLUSH);
}

/// With direct I/O to layer files, checkpoints (the closing one here) write deferred blocks from several threads.
#[test]
fn power_cut_during_overwrites_and_flush_with_direct_io() {
    sweep_power_cuts_on(&OVERWRITE_FLUSH, true);
    sweep_power_cuts_on(&OVERWRITES_FLUSH, true);
}

#[test]
fn power_cut_during_large_write_and_flush() {
    sweep_power_cuts(&LARGE_WRITE_FLUSH);
}

#[test]
fn power_cut_during_large_fua_write() {
    sweep_power_cuts(&LARGE_WRITE_FUA);
}

#[test]
fn power_cut_during_fua_write() {
    sweep_power_cuts(&WRITE_FUA);
}

#[test]
fn power_cut_during_discard_and_flush() {
    sweep_power_cuts(&DISCARD_FLUSH);
}

#[test]
fn power_cut_during_snapshot_create() {
    sweep_power_cuts(&SNAP_CREATE);
}

#[test]
fn power_cut_during_snapshot_protect() {
    sweep_power_cuts(&SNAP_PROTECT);
}

#[test]
fn power_cut_during_clone() {
    sweep_power_cuts(&CLONE);
}

#[test]
fn power_cut_during_flatten() {
    sweep_power_cuts(&FLATTEN);
}

#[test]
fn power_cut_during_resize_grow() {
    sweep_power_cuts(&RESIZE_GROW);
}

#[test]
fn power_cut_during_resize_shrink() {
    sweep_power_cuts(&RESIZE_SHRINK);
}

#[test]
fn power_cut_during_rollback() {
    sweep_power_cuts(&ROLLBACK);
}

#[test]
fn power_cut_during_snapshot_remove() {
    sweep_power_cuts(&SNAP_REMOVE);
}

#[test]
fn power_cut_during_trash_move() {
    sweep_power_cuts(&TRASH_MOVE);
}

#[test]
fn power_cut_during_trash_restore() {
    sweep_power_cuts(&TRASH_RESTORE);
}

#[test]
fn power_cut_during_trash_remove_force() {
    sweep_power_cuts(&TRASH_REMOVE);
}

#[test]
fn power_cut_during_image_remove() {
    sweep_power_cuts(&IMAGE_REMOVE);
}

#[test]
fn power_cut_during_image_copy() {
    sweep_power_cuts(&IMAGE_COPY);
}

#[test]
fn power_cut_during_namespace_create() {
    sweep_power_cuts(&NAMESPACE_CREATE);
}

#[test]
fn power_cut_during_namespace_remove() {
    sweep_power_cuts(&NAMESPACE_REMOVE);
}

#[test]
fn power_cut_during_config_set() {
    sweep_power_cuts(&CONFIG_SET);
}

#[test]
fn power_cut_during_buffered_overwrite_then_snapshot() {
    sweep_power_cuts(&OVERWRITE_THEN_SNAP);
}

#[test]
fn power_cut_during_snapshot_unprotect() {
    sweep_power_cuts(&SNAP_UNPROTECT);
}

#[test]
fn power_cut_during_snapshot_rename() {
    sweep_power_cuts(&SNAP_RENAME);
}

#[test]
fn power_cut_during_image_rename() {
    sweep_power_cuts(&IMAGE_RENAME);
}

#[test]
fn power_cut_during_metadata_set() {
    sweep_power_cuts(&METADATA_SET);
}

#[test]
fn power_cut_during_features_disable() {
    sweep_power_cuts(&FEATURES_DISABLE);
}

#[test]
fn power_cut_during_deep_copy() {
    sweep_power_cuts(&DEEP_COPY);
}

#[test]
fn power_cut_during_trash_purge() {
    sweep_power_cuts(&TRASH_PURGE);
}

/// The very first open creates the store: a cut anywhere in it, or in the pool setup after it, must leave a disk
/// that either opens (showing only what was acknowledged) or, when nothing at all was acknowledged, fails cleanly.
#[test]
fn power_cut_during_store_creation_and_pool_setup() {
    let setup = |vfs: &SimVfs| -> (bool, bool, bool) {
        let Ok(engine) = open_engine(vfs) else { return (false, false, false) };
        let created = engine.pool_create(&pool()).is_ok();
        let tagged = created && engine.pool_application_enable(&pool(), "rbd").is_ok();
        drop(engine);
        (true, created, tagged)
    };
    let total = {
        let vfs = SimVfs::new();
        assert_eq!(setup(&vfs), (true, true, true), "store creation and pool setup work without faults");
        vfs.op_count()
    };
    let mut failures = Failures::default();
    for k in 0..total {
        let vfs = SimVfs::new();
        vfs.inject(k, Fault::PowerCut);
        let acked = match catch_unwind(AssertUnwindSafe(|| setup(&vfs))) {
            Ok(acked) => acked,
            Err(panic) => {
                failures.add(format!("k={k}: panicked: {}", panic_message(&panic)));
                continue;
            }
        };
        for survivors in [CrashSurvivors::None, CrashSurvivors::Random(k ^ 0x5eed), CrashSurvivors::All] {
            let disk = vfs.after_crash(survivors);
            let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                let engine = match open_engine(&disk) {
                    Ok(engine) => engine,
                    // Refusing a store whose creation was never acknowledged is acceptable; after an
                    // acknowledged open it is not.
                    Err(_) if !acked.0 => return Ok(()),
                    Err(e) => return Err(format!("the acknowledged store does not reopen: {} ({e})", e.kind())),
                };
                let pools = ctx("pool list", engine.pool_list())?;
                let rbd = pools.iter().find(|p| p.name == pool());
                if acked.1 && rbd.is_none() {
                    return Err("the acknowledged pool is gone".to_owned());
                }
                if acked.2 && !rbd.is_some_and(|p| p.applications.iter().any(|a| a == "rbd")) {
                    return Err("the acknowledged application tag is gone".to_owned());
                }
                // Finishing the setup proves the engine works on what the crash left.
                if rbd.is_none() {
                    ctx("pool create after crash", engine.pool_create(&pool()))?;
                }
                ctx("tag after crash", engine.pool_application_enable(&pool(), "rbd"))?;
                probe(&engine)?;
                drop(engine);
                fsck_clean(&disk)
            }));
            let outcome = outcome.unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
            if let Err(why) = outcome {
                failures.add(format!("k={k} {survivors:?} acknowledged {acked:?}: {why}"));
            }
        }
    }
    failures.assert_none(&format!("power cuts during store creation ({total} crash points)"));
}

// ---------------------------------------------------------------------------------------------------------------
// Single EIO / ENOSPC faults
// ---------------------------------------------------------------------------------------------------------------

/// Fails the I/O at every index of `op` once with `fault`; the operation must fail with EIO or ENOSPC (or succeed
/// if the failed I/O was not essential), and both the same engine and one reopened on the disk must keep working,
/// keep acknowledged data and pass fsck. Returns the number of fault points.
fn sweep_single_faults(op: &Op, fault: Fault) -> u64 {
    let mut failures = Failures::default();
    let reference = reference(op, false, &mut failures);
    let points = reference.returned_ops - reference.base_ops;
    for k in 0..points {
        let at = reference.base_ops + k;
        let (vfs, engine) = build_base(op.base);
        if vfs.op_count() != reference.base_ops {
            failures.add(format!("k={k}: the base state did different I/O ({} ops)", vfs.op_count()));
            continue;
        }
        vfs.inject(at, fault);
        let result = match catch_unwind(AssertUnwindSafe(|| (op.run)(&engine))) {
            Ok(result) => result,
            Err(panic) => {
                failures.add(format!("k={k}: the operation panicked instead of failing: {}", panic_message(&panic)));
                continue;
            }
        };
        if let Err(e) = &result
            && !matches!(e.kind(), ErrorKind::Io | ErrorKind::NoSpace)
        {
            failures.add(format!("k={k}: {fault:?} surfaced as {} instead of EIO or ENOSPC: {e}", e.kind()));
        }
        // The disk as a crash right now would leave it, before anything else runs.
        let crashed = vfs.after_crash(CrashSurvivors::All);
        let outcome = catch_unwind(AssertUnwindSafe(|| same_engine_after_fault(op, &reference, engine, &vfs, &result)));
        if let Err(why) = outcome.unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic)))) {
            failures.add(format!("k={k} (I/O {at}) {fault:?}, op returned {result:?}:\n  same engine: {why}"));
        }
        if let Err(why) = check_disk(&crashed, &reference.old, &reference.new, result.is_ok(), op.judge) {
            failures
                .add(format!("k={k} (I/O {at}) {fault:?}, op returned {result:?}:\n  reopened on all writes: {why}"));
        }
    }
    eprintln!("{op:?}: {points} {fault:?} points");
    failures.assert_none(&format!("{fault:?} during {op:?} ({points} fault points)"));
    points
}

/// After a reported failure the engine must show old or new, complete the operation when asked again, keep
/// working, and leave a disk that passes fsck once closed. The engine may instead stop (fail-stop after a failed
/// sync or metadata write, refusing changes with a message to restart): then a restart on the same disk must show
/// old or new and pass the same checks.
fn same_engine_after_fault(
    op: &Op,
    reference: &Reference,
    engine: Engine,
    vfs: &SimVfs,
    result: &basalt_core::Result<()>,
) -> Result<(), String> {
    match check_after_fault(op, reference, &engine, result) {
        Ok(()) => drop(engine),
        Err(why) if why.contains("restart basalt") => {
            drop(engine);
            let restarted = ctx("restart after the engine stopped", open_engine(vfs))?;
            check_after_fault(op, reference, &restarted, result).map_err(|e| format!("after a restart: {e}"))?;
            drop(restarted);
        }
        Err(why) => return Err(why),
    }
    fsck_clean(vfs)
}

fn check_after_fault(
    op: &Op,
    reference: &Reference,
    engine: &Engine,
    result: &basalt_core::Result<()>,
) -> Result<(), String> {
    let got = observe(engine)?;
    judge(&got, &reference.old, &reference.new, result.is_ok(), op.judge)?;
    // A failed data-path operation is retried whole, as a client resends an unacknowledged write; a failed
    // metadata operation only if it left no trace.
    if result.is_err() && (op.judge == Judge::Blockwise || got != reference.new) {
        ctx("retry", (op.run)(engine))?;
    }
    let got = observe(engine)?;
    if got != reference.new {
        return Err(format!("after the retry the state is not new:\n{}", diff(&got, &reference.new)));
    }
    probe(engine)
}

#[test]
fn eio_during_write_and_flush() {
    sweep_single_faults(&WRITE_FLUSH, Fault::Eio);
}

#[test]
fn enospc_during_write_and_flush() {
    sweep_single_faults(&WRITE_FLUSH, Fault::Enospc);
}

#[test]
fn eio_during_large_write_and_flush() {
    sweep_single_faults(&LARGE_WRITE_FLUSH, Fault::Eio);
}

#[test]
fn eio_during_snapshot_create() {
    sweep_single_faults(&SNAP_CREATE, Fault::Eio);
}

#[test]
fn enospc_during_snapshot_create() {
    sweep_single_faults(&SNAP_CREATE, Fault::Enospc);
}

#[test]
fn eio_during_clone() {
    sweep_single_faults(&CLONE, Fault::Eio);
}

#[test]
fn enospc_during_clone() {
    sweep_single_faults(&CLONE, Fault::Enospc);
}

#[test]
fn eio_during_flatten() {
    sweep_single_faults(&FLATTEN, Fault::Eio);
}

#[test]
fn enospc_during_flatten() {
    sweep_single_faults(&FLATTEN, Fault::Enospc);
}

#[test]
fn eio_during_image_copy() {
    sweep_single_faults(&IMAGE_COPY, Fault::Eio);
}

#[test]
fn enospc_during_image_copy() {
    sweep_single_faults(&IMAGE_COPY, Fault::Enospc);
}

#[test]
fn eio_during_deep_copy() {
    sweep_single_faults(&DEEP_COPY, Fault::Eio);
}

#[test]
fn enospc_during_deep_copy() {
    sweep_single_faults(&DEEP_COPY, Fault::Enospc);
}

// ---------------------------------------------------------------------------------------------------------------
// Engine bugs the sweeps found, each pinned to one deterministic scenario
// ---------------------------------------------------------------------------------------------------------------

/// Overwrites block 0 (allocated in the head layer by data A) with `durability`, flushing when buffered; returns
/// what block 0 reads after a power cut that loses every unsynced write.
fn block0_after_acknowledged_overwrite(durability: Durability, data: &[u8]) -> Vec<u8> {
    let (vfs, engine) = build_base(Base::Image);
    let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
    io.write(0, data, durability).expect("overwrite block 0 in place");
    if durability == Durability::Buffered {
        io.flush().expect("flush");
    }
    // The disk is taken before closing, so a flush on close cannot hide a flush that did not sync.
    let disk = vfs.after_crash(CrashSurvivors::None);
    drop(io);
    drop(engine);
    let engine = open_engine(&disk).expect("reopen after the power cut");
    let io = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "check").expect("open read-only");
    let mut back = vec![0u8; data.len()];
    io.read(0, &mut back).expect("read block 0");
    back
}

/// Regression (fixed): `ImageState::persist` syncs only layers whose bitmaps changed, and an overwrite of blocks the top layer
/// already holds changes no bitmap; so a flush after such writes returns Ok without syncing the layer file, and a
/// power cut brings back the old data. Expected: block 0 reads the flushed write; observed: it reads data A.
#[test]
fn flush_makes_overwrites_of_allocated_blocks_durable() {
    let data = pattern(20, BLOCK);
    let back = block0_after_acknowledged_overwrite(Durability::Buffered, &data);
    assert!(
        back == data,
        "flushed overwrite lost in a power cut: block 0 reads {:?}, expected {:?}",
        digest(&back),
        digest(&data)
    );
}

/// Same root cause through FUA: the write returns Ok but the in-place overwrite was never synced.
#[test]
fn fua_overwrite_of_allocated_blocks_is_durable() {
    let data = pattern(21, BLOCK);
    let back = block0_after_acknowledged_overwrite(Durability::ForceUnitAccess, &data);
    assert!(
        back == data,
        "FUA overwrite lost in a power cut: block 0 reads {:?}, expected {:?}",
        digest(&back),
        digest(&data)
    );
}

/// The store of `base` with an EIO armed at the last I/O that `op` does on it without faults (the base state and
/// the operation are deterministic, so the same I/O comes again when `op` runs on the returned engine).
fn armed_at_last_io_of(base: Base, op: impl Fn(&Engine) -> basalt_core::Result<()>) -> (SimVfs, Engine) {
    let (vfs, engine) = build_base(base);
    let base_ops = vfs.op_count();
    op(&engine).expect("the operation without faults");
    let last_io = vfs.op_count() - 1;
    drop(engine);

    let (vfs, engine) = build_base(base);
    assert_eq!(vfs.op_count(), base_ops, "the base state is deterministic");
    assert_eq!(engine.stopped(), None, "a working engine has not stopped");
    vfs.inject(last_io, Fault::Eio);
    (vfs, engine)
}

/// A failed sync of the journal stops the engine: `Backend::stopped` says so, with the message its refusals carry.
#[test]
fn a_failed_journal_sync_is_reported_by_stopped() {
    let (_vfs, engine) =
        armed_at_last_io_of(Base::Image, |engine| write_flushed(engine, "img", &[(0, pattern(23, 4096))]));
    let err = write_flushed(&engine, "img", &[(0, pattern(23, 4096))]).expect_err("the flush's sync fails");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let why = engine.stopped().expect("the engine stopped after a failed sync");
    let err = write_flushed(&engine, "img", &[(0, pattern(24, 4096))]).expect_err("the stopped engine refuses");
    assert_eq!(why, err.message(), "stopped() gives the refusal's message");
}

/// Regression: after one failed write or sync of the metadata store, redb refuses every later write transaction.
/// The engine stops too (fail-stop: after a failed sync the kernel may have dropped unsynced pages, so a retry
/// could "succeed" without them) and says to restart; a restart on the same disk must recover a consistent store
/// that works. Scenario: base `Image`, EIO at the last I/O of a snapshot create (the metadata commit's final sync).
#[test]
fn engine_stops_after_a_failed_metadata_commit_and_a_restart_recovers() {
    let (vfs, engine) = armed_at_last_io_of(Base::Image, |engine| engine.snap_create(&snap("img", "s1")));
    let err = engine.snap_create(&snap("img", "s1")).expect_err("the commit's sync fails");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let err = engine
        .config_set(&ConfigLevel::Image(spec("img")), "rbd_qos_iops_limit", "100")
        .expect_err("the stopped engine refuses changes");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.message().contains("restart basalt"), "{err}");
    // The server learns it from the query, not from the wording of the refusals.
    assert_eq!(engine.stopped().as_deref(), Some(err.message()), "the engine says it stopped, as it refuses");
    drop(engine);

    let engine = open_engine(&vfs).expect("restart");
    engine
        .config_set(&ConfigLevel::Image(spec("img")), "rbd_qos_iops_limit", "100")
        .expect("a metadata operation after the restart works");
    write_flushed(&engine, "img", &[(0, pattern(22, 4096))]).expect("a write and flush after the restart work");
    drop(engine);
    fsck_clean(&vfs).expect("fsck after the restart");
}

/// Regression: when the commit that publishes an image copy fails at its final sync, `image_copy` deletes the copy's layer
/// file; but the commit's pages were already written, so a crash that keeps them leaves `copy` listed with its layer
/// file gone: opening it fails with EIO ("layer file ... cannot be opened") and fsck reports the missing file.
/// Scenario: base `Snapshot`, EIO at the last I/O of `image copy`, then the disk with every unsynced write kept.
/// The engine now removes files after a failed copy only when it can read that no record refers to them.
#[test]
fn failed_copy_commit_does_not_delete_the_copys_layer_file() {
    let (vfs, engine) = armed_at_last_io_of(Base::Snapshot, IMAGE_COPY.run);
    let err = (IMAGE_COPY.run)(&engine).expect_err("the publishing commit's final sync fails");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    // The disk is taken before closing, as a crash right after the failure would leave it.
    let disk = vfs.after_crash(CrashSurvivors::All);
    drop(engine);

    let engine = open_engine(&disk).expect("reopen");
    let listed = engine.image_list(&default_loc()).expect("list images").iter().any(|e| e.name.as_str() == "copy");
    if listed {
        let copy = engine.open(&spec("copy"), &OpenTarget::HeadReadOnly, "check").expect("a listed copy opens");
        let source = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "check").expect("the source opens");
        let (copy, source) =
            (read_all(copy.as_ref()).expect("read copy"), read_all(source.as_ref()).expect("read source"));
        assert!(copy == source, "the copy differs from its source");
    }
    drop(engine);
    fsck_clean(&disk).expect("fsck after the failed copy");
}

/// Regression: a write used to mark its layer as needing a sync *before* its data reached the file. A flush that
/// ran while the write was still inside `write_at` cleared that mark and synced without the write's data; the
/// write then returned, set its block's bitmap bit and was acknowledged, and the next flush committed the bit
/// without syncing the file again. After a power cut the block read zeros: a flushed write was lost.
/// Scenario: base `Snapshot`; a whole-block write to block 0 (new in the head layer) is held inside `write_at`
/// while another thread flushes; the write is released and returns, a second flush returns, the power goes out.
#[test]
fn a_flush_during_an_in_flight_write_does_not_cover_it() {
    let (vfs, engine) = build_base(Base::Snapshot);
    let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
    let data = pattern(23, BLOCK);
    let gate = vfs.hold_next_write();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| io.write(0, &data, Durability::Buffered));
        gate.wait_until_held();
        // Another client's flush while the write is in flight: nothing of the write is in the file yet.
        scope.spawn(|| io.flush()).join().expect("the flushing thread").expect("flush during the write");
        gate.release();
        writer.join().expect("the writing thread").expect("the held write is acknowledged");
    });
    io.flush().expect("flush after the acknowledged write");
    // The disk is taken before closing, so a flush on close cannot hide a flush that did not sync.
    let disk = vfs.after_crash(CrashSurvivors::None);
    drop(io);
    drop(engine);
    let engine = open_engine(&disk).expect("reopen after the power cut");
    let io = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "check").expect("open read-only");
    let mut back = vec![0u8; BLOCK];
    io.read(0, &mut back).expect("read block 0");
    assert!(
        back == data,
        "an acknowledged and flushed write was lost in a power cut: block 0 reads {:?}, expected {:?}",
        digest(&back),
        digest(&data)
    );
    drop(io);
    drop(engine);
    fsck_clean(&disk).expect("fsck after the power cut");
}

/// The race of an overwrite with a checkpoint (docs/FORMAT.md, "The hard part"): the overwrite's object is already
/// marked dirty, its data write is held in flight while a checkpoint commits `journal_applied` past the dirty
/// record, then the power goes. Were the checkpoint not to wait for the write, its data could reach the disk
/// without its checksum with nothing left to say the object must be recomputed: the block would read as EIO. (It
/// does fail, at a random cut, with `Store::checkpoint`'s `wait_overwrites_before` taken out.)
#[test]
fn an_overwrite_in_flight_during_a_checkpoint_stays_covered() {
    let cuts = overwrite_cuts(24);
    // Each cut twice: with the mark counting through its dirty record, and through the row of a checkpoint that
    // carried it (docs/FORMAT.md, "Marks that outlive a checkpoint").
    let cases = cuts.flat_map(|cut| [(cut, false), (cut, true)]);
    for (seed, (cut, carried)) in cases.enumerate() {
        let (vfs, engine) = build_base(Base::Image);
        engine.image_create(&spec("other"), &tiny_image()).expect("a second image");
        let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
        // The first overwrite marks object 0 dirty (a journal record, synced); the second needs no new mark. Whole
        // objects: a shorter overwrite of blocks that are data is deferred, and writes no layer file in place.
        io.write(0, &pattern(40, OBJECT), Durability::Buffered).expect("first overwrite");
        if carried {
            checkpoint(&engine);
        }
        let data = pattern(41, OBJECT);
        let gate = vfs.hold_next_write();
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| io.write(0, &data, Durability::Buffered));
            gate.wait_until_held();
            // Removing another image checkpoints the whole store while the data write is held.
            let checkpoint = scope.spawn(|| engine.image_remove(&spec("other"), &Progress::default()));
            // Give the checkpoint the time to reach its wait (if it finished instead, the cut below shows it).
            std::thread::sleep(std::time::Duration::from_millis(50));
            gate.release();
            writer.join().expect("the writing thread").expect("the held overwrite is acknowledged");
            checkpoint.join().expect("the checkpoint thread").expect("remove the other image");
        });
        let disk = vfs.after_crash(cut);
        drop(io);
        drop(engine);
        let engine = open_engine(&disk).expect("reopen after the power cut");
        every_block_verifies(&engine).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let io = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "check").expect("open read-only");
        let mut back = vec![0u8; BLOCK];
        io.read(0, &mut back).unwrap_or_else(|e| panic!("seed {seed}: block 0 does not read: {e}"));
        drop(io);
        drop(engine);
        fsck_clean(&disk).expect("fsck after the power cut");
    }
}

/// An overwrite in place whose crc write fails leaves new bytes in the layer file under old crcs, and rewrites the
/// crcs from what the file holds. That rewrite is a change of the layer's files like any write: a flush that synced
/// the layer between the failed write and the rewrite (here a mark, for an earlier large write) must not let the
/// next checkpoint skip its sync, for the checkpoint after it drops the object's dirty mark. A power cut that keeps
/// only synced bytes would then find the new data under the old crcs, with nothing left to say they must be
/// recomputed: the block would read as EIO.
#[test]
fn the_crcs_rewritten_after_a_failed_overwrite_are_synced_before_the_mark_goes() {
    let (vfs, engine) = build_base(Base::Image);
    let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
    // The first overwrite marks object 0 dirty and logs a large (kind-2) record that no flush has covered yet.
    io.write(0, &pattern(40, OBJECT), Durability::Buffered).expect("first overwrite");
    let data = pattern(41, OBJECT);
    let data_write = vfs.hold_next_write();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| io.write(0, &data, Durability::Buffered));
        data_write.wait_until_held();
        let crc_write = vfs.hold_next_write();
        // The data write is the next operation, its crc write the one after: that one fails.
        vfs.inject(vfs.op_count() + 1, Fault::Eio);
        data_write.release();
        crc_write.wait_until_held();
        let rewrite = vfs.hold_next_write();
        crc_write.release();
        // The failed write is counted; its crcs are about to be rewritten from the file. A flush syncs the layer
        // file and its sidecar now, for the first overwrite's large record.
        rewrite.wait_until_held();
        io.flush().expect("flush the first overwrite");
        rewrite.release();
        assert!(writer.join().expect("the writing thread").is_err(), "the overwrite whose crc write failed fails");
    });
    vfs.disarm();
    // The first checkpoint keeps the mark (the failed write was in flight in its epoch); the second drops it.
    checkpoint(&engine);
    checkpoint(&engine);
    let disk = vfs.after_crash(CrashSurvivors::None);
    drop(io);
    drop(engine);
    let engine = open_engine(&disk).expect("reopen after the power cut");
    every_block_verifies(&engine).unwrap_or_else(|e| panic!("{e}"));
    drop(engine);
    fsck_clean(&disk).expect("fsck after the power cut");
}

/// A read that meets an overwrite in place halfway (its new bytes in the layer file, its crcs not yet in the
/// sidecar) waits for the write however long it stalls there (a crc write can wait on writeback throttling, or on
/// the sync of another segment closed to stay under the open-file limit): the bytes and their crc are correct once
/// it returns. Reads retried a bounded number of times meanwhile, then answered EIO and counted the block as damaged,
/// so the image showed as degraded though nothing was.
#[test]
fn a_read_that_meets_a_stalled_overwrite_waits_for_it_and_reports_no_damage() {
    let (vfs, engine) = build_base(Base::Image);
    let io = engine.open(&spec("img"), &OpenTarget::Head, "writer").expect("open the head");
    let reader = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "reader").expect("open read-only");
    // Far longer than the retries of a read take (a fraction of a second): the old reads had failed by then.
    let (_, read, written) =
        read_during_a_stalled_overwrite(&vfs, io.as_ref(), reader.as_ref(), 0, std::time::Duration::from_secs(2));
    written.expect("the overwrite");
    let back = read.expect("the read during the overwrite");
    assert!(back == pattern(41, OBJECT)[..BLOCK], "the read waited for the overwrite and shows it");
    assert!(engine.checksum_errors().is_empty(), "no damage counted: {:?}", engine.checksum_errors());
    drop(reader);
    drop(io);
    drop(engine);
    fsck_clean(&vfs).expect("fsck");
}

/// A block damaged on disk is reported while an overwrite elsewhere in its layer is stalled halfway: the read
/// waits only for writes that may cover its block, so a damaged block is not held for as long as other parts of
/// the image keep being written (a busy image always has some write in progress).
#[test]
fn a_damaged_block_is_reported_while_an_overwrite_elsewhere_in_the_layer_stalls() {
    let (vfs, engine) = build_base(Base::Image);
    // Damage the block data A put at 200 KiB (object 3), under the engine: in the layer's second segment file
    // (128 KiB segments here).
    let layers = Path::new(ROOT).join("layers");
    let name = vfs.list(&layers).expect("list").into_iter().find(|n| n.ends_with(".layer.1")).expect("segment 1");
    let file = vfs.open(&layers.join(name), false).expect("open the segment");
    let damaged = 200u64 << 10;
    let at = damaged - (128 << 10) + 10;
    let mut byte = [0u8; 1];
    file.read_at(&mut byte, at).expect("read a byte");
    assert_ne!(byte[0], 0, "data A is there");
    file.write_at(&[byte[0] ^ 0x40], at).expect("flip it");
    let io = engine.open(&spec("img"), &OpenTarget::Head, "writer").expect("open the head");
    let reader = engine.open(&spec("img"), &OpenTarget::HeadReadOnly, "reader").expect("open read-only");
    // Retrying takes a fraction of a second; waiting for the stalled write took the whole stall.
    let (answered, read, written) = read_during_a_stalled_overwrite(
        &vfs,
        io.as_ref(),
        reader.as_ref(),
        damaged,
        std::time::Duration::from_secs(20),
    );
    written.expect("the overwrite");
    assert!(answered, "the read of the damaged block waited for a write of another object");
    let err = read.expect_err("a damaged block never reads");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(engine.checksum_errors().len(), 1, "the damage is counted: {:?}", engine.checksum_errors());
}

/// Overwrites object 0 of `img` twice through `io`, the second time held on the disk between its data and its crcs
/// (the first overwrite marks the object dirty, so the second writes its data first), and meanwhile reads the block
/// at `at` through `reader`, giving the read up to `patience` before the held write goes on. Returns whether the
/// read answered while the write was held, what it read, and how the held write ended.
fn read_during_a_stalled_overwrite(
    vfs: &SimVfs,
    io: &dyn ImageIo,
    reader: &dyn ImageIo,
    at: u64,
    patience: std::time::Duration,
) -> (bool, basalt_core::Result<Vec<u8>>, basalt_core::Result<()>) {
    io.write(0, &pattern(40, OBJECT), Durability::Buffered).expect("first overwrite");
    let data = pattern(41, OBJECT);
    let data_write = vfs.hold_next_write();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| io.write(0, &data, Durability::Buffered));
        data_write.wait_until_held();
        let crc_write = vfs.hold_next_write();
        data_write.release();
        // The new bytes are in the layer file; their crcs wait.
        crc_write.wait_until_held();
        let reading = scope.spawn(|| {
            let mut back = vec![0u8; BLOCK];
            reader.read(at, &mut back).map(|()| back)
        });
        let until = std::time::Instant::now() + patience;
        while !reading.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let answered = reading.is_finished();
        crc_write.release();
        let written = writer.join().expect("the writing thread");
        (answered, reading.join().expect("the reading thread"), written)
    })
}

/// Random power cuts, and the one that keeps an overwrite's new bytes in the layer file but neither their crcs nor
/// the journal's records (what an overwrite not covered by a dirty mark would turn into a checksum error).
fn overwrite_cuts(random: u64) -> impl Iterator<Item = CrashSurvivors> {
    (0..random)
        .map(|seed| CrashSurvivors::Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .chain([CrashSurvivors::FilesEndingWith(&[".layer"])])
}

/// Reopens the disk left by a power cut: every block verifies against its checksum, and fsck finds nothing.
fn every_block_verifies_after_the_cut(disk: &SimVfs, seed: usize) {
    let engine = open_engine(disk).expect("reopen after the power cut");
    every_block_verifies(&engine).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    drop(engine);
    fsck_clean(disk).expect("fsck after the power cut");
}

/// Makes the store checkpoint (creating and removing an image does) and returns the journal's counters after it.
fn checkpoint(engine: &Engine) -> basalt_engine::JournalStats {
    let before = engine.journal_stats().checkpoints;
    engine.image_create(&spec("scratch"), &tiny_image()).expect("a scratch image");
    engine.image_remove(&spec("scratch"), &Progress::default()).expect("remove it: a checkpoint");
    let stats = engine.journal_stats();
    assert!(stats.checkpoints > before, "removing an image checkpoints");
    stats
}

/// An object that keeps being overwritten keeps its dirty mark across checkpoints, through a row of
/// `dirty_objects`, so only its first overwrite pays a dirty record and a journal sync; an object left alone for a
/// whole checkpoint interval loses it. A cut that keeps only the layer file's bytes after the carried overwrite
/// must still find every block verifying: the row makes the open recompute the object's crcs.
#[test]
fn a_mark_in_use_outlives_checkpoints_and_still_covers_overwrites() {
    let cuts = overwrite_cuts(12);
    for (seed, cut) in cuts.enumerate() {
        let (vfs, engine) = build_base(Base::Image);
        let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
        let records = || engine.journal_stats().dirty_records;
        // Whole objects, written in place (a shorter overwrite of data blocks is deferred: no mark at all).
        io.write(0, &pattern(50, OBJECT), Durability::Buffered).expect("first overwrite");
        let marked = records();
        assert_eq!(marked, 1, "the first overwrite of object 0 appends one dirty record");
        for round in 0..3u8 {
            checkpoint(&engine);
            io.write(0, &pattern(51 + round, OBJECT), Durability::Buffered).expect("overwrite after a checkpoint");
            assert_eq!(records(), marked, "round {round}: the mark in use carried over the checkpoint");
        }
        // Two checkpoints with no overwrite between: the first carries the mark, the second drops it.
        checkpoint(&engine);
        checkpoint(&engine);
        io.write(0, &pattern(60, OBJECT), Durability::Buffered).expect("overwrite after an idle interval");
        assert_eq!(records(), marked + 1, "a mark idle for a whole interval was dropped");
        // A carried mark again, then a cut.
        checkpoint(&engine);
        io.write(0, &pattern(61, OBJECT), Durability::Buffered).expect("overwrite under the carried mark");
        assert_eq!(records(), marked + 1, "no new record under the carried mark");
        let disk = vfs.after_crash(cut);
        drop(io);
        drop(engine);
        // Before any open: fsck leaves the marked object to the open's recompute rather than calling it damaged.
        fsck_clean(&disk).unwrap_or_else(|e| panic!("seed {seed}: fsck before the open: {e}"));
        every_block_verifies_after_the_cut(&disk, seed);
    }
}

/// A block discarded and written again before any checkpoint: the metadata store still calls it data, so the new
/// write (to a block the layer no longer holds) must be covered by a dirty record too, or a cut that loses both
/// records but keeps the new bytes leaves a block that fails its checksum. Two things cover it: the discard's punch
/// takes a dirty record, and so does a write to an object with a removal not yet checkpointed
/// (`Layer::removal_pending`). The test fails when both are taken out; either alone keeps it passing.
#[test]
fn a_rewrite_after_a_discard_stays_covered() {
    let cuts = overwrite_cuts(24);
    for (seed, cut) in cuts.enumerate() {
        let (vfs, engine) = build_base(Base::Image);
        // A checkpoint (removing an image makes one) puts A's blocks in the metadata store, so only the bitmaps
        // there say what they hold.
        engine.image_create(&spec("other"), &tiny_image()).expect("a second image");
        engine.image_remove(&spec("other"), &Progress::default()).expect("a checkpoint");
        let io = engine.open(&spec("img"), &OpenTarget::Head, "crash-test").expect("open the head");
        io.discard(0, 2 * BLOCK as u64, Durability::Buffered).expect("discard A's first blocks");
        io.write(0, &pattern(42, 2 * BLOCK), Durability::Buffered).expect("write them again");
        let disk = vfs.after_crash(cut);
        drop(io);
        drop(engine);
        every_block_verifies_after_the_cut(&disk, seed);
    }
}

/// A grandparent `top`, a middle clone `mid` of its protected snapshot `ps`, and a leaf clone `leaf` of the middle's
/// protected snapshot `cs`, each 4 MiB. `ps` owns more data than the grandparent's head will hold (so removing `ps`
/// folds the head's blocks down into its layer) and zero markers over the second MiB, where the head then writes
/// 0x22: a view of the leaf built before `mid` is flattened and `ps` removed reads through `ps`'s layer there, and
/// after the fold finds the head's 0x22 in it where the leaf shows zeros.
fn a_leaf_under_a_clone_of_a_snapshot_that_can_fold(engine: &Engine) {
    let mib = 1usize << 20;
    let mut options = CreateOptions::with_size(4 * mib as u64);
    options.order = Some(ObjectOrder::new(ORDER).expect("valid order"));
    engine.image_create(&spec("top"), &options).expect("create the grandparent");
    let top = engine.open(&spec("top"), &OpenTarget::Head, "setup").expect("open it");
    top.write(0, &vec![0x11; 4 * mib], Durability::Buffered).expect("write it whole");
    engine.snap_create(&snap("top", "s0")).expect("snapshot s0");
    top.write(2 * mib as u64, &pattern(12, 2 * mib), Durability::Buffered).expect("write the second half");
    top.write_zeroes(mib as u64, mib as u64, basalt_core::ZeroMode::MayUnmap, Durability::Buffered).expect("zero");
    engine.snap_create(&snap("top", "ps")).expect("snapshot ps");
    engine.snap_protect(&snap("top", "ps")).expect("protect ps");
    top.write(mib as u64, &vec![0x22; mib], Durability::Buffered).expect("the head's newer second MiB");
    drop(top);
    engine.clone_image(&snap("top", "ps"), &spec("mid"), &CloneRequest::inherit()).expect("clone the middle");
    engine.snap_create(&snap("mid", "cs")).expect("snapshot the middle");
    engine.snap_protect(&snap("mid", "cs")).expect("protect it");
    engine.clone_image(&snap("mid", "cs"), &spec("leaf"), &CloneRequest::inherit()).expect("clone the leaf");
}

/// What `target` of `image` reads, all of it ([`read_all`]).
fn read_whole(engine: &Engine, image: &str, target: &OpenTarget) -> Vec<u8> {
    let io = engine.open(&spec(image), target, "check").expect("open to check");
    read_all(io.as_ref()).expect("read to check")
}

/// Runs `copy` on another thread, holding its first write into a layer file while the leaf's parent `mid` is
/// flattened and the grandparent's snapshot `ps` is removed (which folds its layer).
fn copy_while_a_flatten_and_a_fold_run(
    vfs: &SimVfs,
    engine: &Engine,
    copy: impl FnOnce() -> basalt_core::Result<()> + Send,
) {
    let gate = vfs.hold_next_write_in(Path::new("/store/layers"));
    std::thread::scope(|scope| {
        let copier = scope.spawn(copy);
        gate.wait_until_held();
        engine.flatten(&spec("mid"), &Progress::new()).expect("flatten the middle");
        engine.snap_unprotect(&snap("top", "ps")).expect("unprotect ps: no clone left");
        engine.snap_remove(&snap("top", "ps")).expect("remove ps, which folds its layer");
        gate.release();
        copier.join().expect("the copying thread").expect("the copy");
    });
}

fn assert_same(what: &str, expected: &[u8], copied: &[u8]) {
    let differs = expected.iter().zip(copied).position(|(a, b)| a != b);
    let found = differs.map_or(0, |i| copied[i]);
    assert_eq!(differs, None, "{what} differs from the bytes expected at that offset (0x{found:02x} there)");
}

/// A copy reads its source through a view built when it starts. Here the source is the leaf of
/// [`a_leaf_under_a_clone_of_a_snapshot_that_can_fold`], and while the copy runs its parent is flattened and the
/// grandparent's snapshot it was cloned from is removed: the copy must read what its source shows, not the blocks
/// the fold moved. (It fails, with 0x22 in the second MiB of the copy, when `copy_data` keeps the view it started
/// with.)
#[test]
fn a_copy_reads_its_source_as_it_was_when_a_flatten_and_a_fold_run_during_it() {
    let (vfs, engine) = build_base(Base::Image);
    a_leaf_under_a_clone_of_a_snapshot_that_can_fold(&engine);
    let expected = read_whole(&engine, "leaf", &OpenTarget::HeadReadOnly);
    assert!(expected[1 << 20..2 << 20].iter().all(|&b| b == 0), "the leaf shows the zeroed second MiB");
    copy_while_a_flatten_and_a_fold_run(&vfs, &engine, || {
        engine.image_copy(&spec("leaf"), &CopyRequest::to(spec("copy")), &Progress::new())
    });
    assert_same("the copy", &expected, &read_whole(&engine, "copy", &OpenTarget::HeadReadOnly));
}

/// The same for a deep copy, which keeps the parent and copies only what the leaf itself holds, snapshot by
/// snapshot: its views of the leaf are built once too, and their parent goes stale the same way. It reads that
/// parent only to decide where the copy's own layer must hide or show it (`match_parent`), so the leaf here has
/// data, zeros over data of the parent, and a snapshot, and every view of the copy must read as the leaf's. (It
/// fails when `match_parent` does nothing.)
#[test]
fn a_deep_copy_reads_its_source_as_it_was_when_a_flatten_and_a_fold_run_during_it() {
    let (vfs, engine) = build_base(Base::Image);
    a_leaf_under_a_clone_of_a_snapshot_that_can_fold(&engine);
    let mib = 1u64 << 20;
    let leaf = engine.open(&spec("leaf"), &OpenTarget::Head, "setup").expect("open the leaf");
    leaf.write(0, &vec![0x33; 64 << 10], Durability::Buffered).expect("the leaf's own data");
    leaf.write_zeroes(mib + mib / 2, mib, basalt_core::ZeroMode::MayUnmap, Durability::Buffered).expect("zeros");
    engine.snap_create(&snap("leaf", "ls")).expect("snapshot the leaf");
    leaf.write(3 * mib, &vec![0x44; 64 << 10], Durability::Buffered).expect("the leaf's newer data");
    leaf.write_zeroes(2 * mib + 4096, 8192, basalt_core::ZeroMode::MayUnmap, Durability::Buffered).expect("zeros");
    drop(leaf);
    let ls = OpenTarget::Snapshot(SnapName::new("ls").expect("name"));
    let (expected_head, expected_ls) =
        (read_whole(&engine, "leaf", &OpenTarget::HeadReadOnly), read_whole(&engine, "leaf", &ls));
    copy_while_a_flatten_and_a_fold_run(&vfs, &engine, || {
        engine.image_deep_copy(&spec("leaf"), &spec("copy"), &Progress::new())
    });
    assert_same("the deep copy's snapshot", &expected_ls, &read_whole(&engine, "copy", &ls));
    assert_same("the deep copy", &expected_head, &read_whole(&engine, "copy", &OpenTarget::HeadReadOnly));
    assert_same("the leaf read again", &expected_head, &read_whole(&engine, "leaf", &OpenTarget::HeadReadOnly));
}
