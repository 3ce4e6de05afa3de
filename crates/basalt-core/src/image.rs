//! Image layout and feature types, with the reference system's rules for which combinations are valid.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};
use crate::names::{ImageName, Namespace, PoolName, SnapName};

/// The smallest object order (4 KiB objects).
pub const ORDER_MIN: u8 = 12;
/// The largest object order (32 MiB objects).
pub const ORDER_MAX: u8 = 25;
/// The default object order (4 MiB objects).
pub const ORDER_DEFAULT: u8 = 22;
/// The largest image size accepted, in bytes (2^60: far beyond any disk here, well inside `u64` arithmetic).
pub const IMAGE_SIZE_MAX_BYTES: u64 = 1 << 60;

/// Objects are `2^order` bytes; the order is between 12 and 25.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectOrder(u8);

impl ObjectOrder {
    /// Validates an order; outside 12..=25 is EDOM, as in the reference.
    pub fn new(order: u8) -> Result<ObjectOrder> {
        if !(ORDER_MIN..=ORDER_MAX).contains(&order) {
            return Err(Error::new(
                ErrorKind::OutOfDomain,
                format!("object order {order} is out of range: use {ORDER_MIN} (4 KiB) to {ORDER_MAX} (32 MiB)"),
            ));
        }
        Ok(ObjectOrder(order))
    }

    /// Converts an object size in bytes, which must be a power of two from 4 KiB to 32 MiB.
    pub fn from_object_size(size_bytes: u64) -> Result<ObjectOrder> {
        if !size_bytes.is_power_of_two() {
            return Err(Error::invalid(format!("object size {size_bytes} is not a power of two")));
        }
        let order = u8::try_from(size_bytes.trailing_zeros())
            .map_err(|_| Error::invalid(format!("object size {size_bytes} is out of range")))?;
        ObjectOrder::new(order)
    }

    /// Returns the order.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Returns the object size in bytes.
    pub fn object_size_bytes(self) -> u64 {
        1u64 << self.0
    }
}

impl Default for ObjectOrder {
    fn default() -> ObjectOrder {
        ObjectOrder(ORDER_DEFAULT)
    }
}

/// RBD feature bits, numbered as in the reference (`features.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

impl Features {
    /// Copy-on-write clones from protected snapshots.
    pub const LAYERING: Features = Features(1);
    /// Stripe unit/count other than one object.
    pub const STRIPING: Features = Features(2);
    /// One writer at a time.
    pub const EXCLUSIVE_LOCK: Features = Features(4);
    /// Tracks which objects exist.
    pub const OBJECT_MAP: Features = Features(8);
    /// Tracks which objects changed since the previous snapshot.
    pub const FAST_DIFF: Features = Features(16);
    /// Flatten also detaches the clone's own snapshots from the parent.
    pub const DEEP_FLATTEN: Features = Features(32);
    /// Write-ahead journal for mirroring (recognised, not supported by the embedded engine).
    pub const JOURNALING: Features = Features(64);
    /// Data objects in a separate pool.
    pub const DATA_POOL: Features = Features(128);
    /// Internal: operations restricted to new clients.
    pub const OPERATIONS: Features = Features(256);
    /// Internal: the image is being migrated.
    pub const MIGRATING: Features = Features(512);

    /// The empty set.
    pub const NONE: Features = Features(0);
    /// Every bit the reference defines.
    pub const ALL: Features = Features(1023);
    /// The reference default: layering, exclusive-lock, object-map, fast-diff, deep-flatten (61).
    pub const DEFAULT: Features = Features(61);
    /// Features that may be enabled or disabled after creation.
    pub const MUTABLE: Features = Features(4 | 8 | 16 | 64);
    /// Features that may be disabled but never enabled after creation.
    pub const DISABLE_ONLY: Features = Features(32);
    /// Features the system sets by itself from other settings.
    pub const IMPLICIT: Features = Features(2 | 16 | 128 | 256 | 512);

    const NAMES: [(Features, &'static str); 10] = [
        (Features::LAYERING, "layering"),
        (Features::STRIPING, "striping"),
        (Features::EXCLUSIVE_LOCK, "exclusive-lock"),
        (Features::OBJECT_MAP, "object-map"),
        (Features::FAST_DIFF, "fast-diff"),
        (Features::DEEP_FLATTEN, "deep-flatten"),
        (Features::JOURNALING, "journaling"),
        (Features::DATA_POOL, "data-pool"),
        (Features::OPERATIONS, "operations"),
        (Features::MIGRATING, "migrating"),
    ];

    /// Builds a set from raw bits; unknown bits are ENOSYS, as in the reference.
    pub fn from_bits(bits: u64) -> Result<Features> {
        if bits & !Features::ALL.0 != 0 {
            return Err(Error::new(
                ErrorKind::NotImplemented,
                format!("unknown feature bits {:#x}", bits & !Features::ALL.0),
            ));
        }
        Ok(Features(bits))
    }

    /// Returns the raw bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Returns true when every feature of `other` is in `self`.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Returns true when any feature of `other` is in `self`.
    pub fn intersects(self, other: Features) -> bool {
        self.0 & other.0 != 0
    }

    /// Returns the union.
    #[must_use]
    pub fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// Returns `self` without `other`.
    #[must_use]
    pub fn difference(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }

    /// Returns the intersection.
    #[must_use]
    pub fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// Returns true for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses one feature name (`layering`, `exclusive-lock` ...).
    pub fn from_name(name: &str) -> Result<Features> {
        Features::NAMES
            .iter()
            .find(|(_, n)| *n == name.trim())
            .map(|(f, _)| *f)
            .ok_or_else(|| Error::invalid(format!("unknown image feature '{name}'")))
    }

    /// Parses a list of names, each possibly comma-separated (`layering,exclusive-lock`).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Features> {
        let mut features = Features::NONE;
        for name in names {
            for part in name.as_ref().split(',').filter(|p| !p.trim().is_empty()) {
                features = features.union(Features::from_name(part)?);
            }
        }
        Ok(features)
    }

    /// Returns the names of the set features, sorted alphabetically as the dashboard shows them.
    pub fn names(self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> =
            Features::NAMES.iter().filter(|(f, _)| self.contains(*f)).map(|(_, n)| *n).collect();
        names.sort_unstable();
        names
    }

    /// Checks the dependencies between features (object-map and journaling need exclusive-lock, fast-diff
    /// needs object-map); a violation is EINVAL with the rule in the message.
    pub fn check_dependencies(self) -> Result<()> {
        if self.contains(Features::FAST_DIFF) && !self.contains(Features::OBJECT_MAP) {
            return Err(Error::invalid("fast-diff requires object-map: enable object-map too"));
        }
        if self.contains(Features::OBJECT_MAP) && !self.contains(Features::EXCLUSIVE_LOCK) {
            return Err(Error::invalid("object-map requires exclusive-lock: enable exclusive-lock too"));
        }
        if self.contains(Features::JOURNALING) && !self.contains(Features::EXCLUSIVE_LOCK) {
            return Err(Error::invalid("journaling requires exclusive-lock: enable exclusive-lock too"));
        }
        Ok(())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({})", self.names().join(","))
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// The smallest stripe unit accepted, in bytes (4 KiB).
pub const STRIPE_UNIT_MIN_BYTES: u64 = 4096;
/// The largest stripe count accepted.
pub const STRIPE_COUNT_MAX: u64 = 4096;

/// How image data is spread over objects: `count` objects take `unit` bytes in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Striping {
    /// Bytes written to one object before moving to the next in the set.
    pub unit_bytes: u64,
    /// Number of objects in a set.
    pub count: u64,
}

impl Striping {
    /// The layout without striping: one object after another.
    pub fn none(order: ObjectOrder) -> Striping {
        Striping { unit_bytes: order.object_size_bytes(), count: 1 }
    }

    /// Validates a layout against the object size: the unit divides the object size, as librbd requires, and
    /// both parts are within [`Striping::check_limits`].
    pub fn new(unit_bytes: u64, count: u64, order: ObjectOrder) -> Result<Striping> {
        Striping::check_limits(unit_bytes, count)?;
        let object_size = order.object_size_bytes();
        if !object_size.is_multiple_of(unit_bytes) {
            return Err(Error::invalid(format!(
                "stripe unit {unit_bytes} is not a factor of the object size {object_size}: use a power of two from \
                 {STRIPE_UNIT_MIN_BYTES} up to the object size"
            )));
        }
        Ok(Striping { unit_bytes, count })
    }

    /// The limits that do not depend on the object size: a stripe unit that is a power of two of at least
    /// [`STRIPE_UNIT_MIN_BYTES`] (the smallest the reference dashboard offers, and the engine's block size) and a
    /// stripe count from 1 to [`STRIPE_COUNT_MAX`]. librbd itself only asks that the unit divide the object size,
    /// but a unit of a few bytes spreads every block over thousands of objects; both backends refuse it alike.
    pub fn check_limits(unit_bytes: u64, count: u64) -> Result<()> {
        if unit_bytes == 0 || count == 0 {
            return Err(Error::invalid("stripe unit and stripe count must both be positive"));
        }
        if !unit_bytes.is_power_of_two() || unit_bytes < STRIPE_UNIT_MIN_BYTES {
            return Err(Error::invalid(format!(
                "stripe unit {unit_bytes} is not allowed: use a power of two from {STRIPE_UNIT_MIN_BYTES} (4 KiB) up \
                 to the object size"
            )));
        }
        if count > STRIPE_COUNT_MAX {
            return Err(Error::invalid(format!("stripe count {count} is too large: the limit is {STRIPE_COUNT_MAX}")));
        }
        Ok(())
    }

    /// Returns true when this layout is the trivial one for `order` (so the striping feature is off).
    pub fn is_trivial(self, order: ObjectOrder) -> bool {
        self.count == 1 && self.unit_bytes == order.object_size_bytes()
    }
}

/// What a new image looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Virtual size in bytes.
    pub size_bytes: u64,
    /// Object order; `None` means the default (22).
    pub order: Option<ObjectOrder>,
    /// Features; `None` means the default set.
    pub features: Option<Features>,
    /// Stripe unit and count; `None` means no striping.
    pub striping: Option<(u64, u64)>,
    /// A separate pool for data objects.
    pub data_pool: Option<PoolName>,
}

impl CreateOptions {
    /// Options for an image of `size_bytes` with every other setting at its default.
    pub fn with_size(size_bytes: u64) -> CreateOptions {
        CreateOptions { size_bytes, order: None, features: None, striping: None, data_pool: None }
    }
}

/// Checks a virtual size against the global limit.
pub fn check_size(size_bytes: u64) -> Result<()> {
    if size_bytes > IMAGE_SIZE_MAX_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("size {size_bytes} is too large: the limit is {IMAGE_SIZE_MAX_BYTES} bytes (1 EiB)"),
        ));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Returns the seconds since the epoch.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// Returns the timestamp `secs` seconds later, saturating.
    #[must_use]
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 UTC (`2026-11-25T14:20:17Z`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::time::rfc3339(i64::try_from(self.0).unwrap_or(i64::MAX)))
    }
}

/// A snapshot id: unique and increasing within an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapId(pub u64);

/// The parent of a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    /// Pool of the parent image.
    pub pool: PoolName,
    /// Namespace of the parent image.
    pub namespace: Namespace,
    /// Name of the parent image (its trash name if it was moved to the trash).
    pub image: ImageName,
    /// Id of the parent image.
    pub image_id: String,
    /// The parent snapshot.
    pub snap: SnapName,
    /// Id of the parent snapshot.
    pub snap_id: SnapId,
    /// Bytes of the clone that still read through to the parent.
    pub overlap_bytes: u64,
    /// True when the parent image is in the trash.
    pub in_trash: bool,
}

/// An image's status as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStatus {
    /// Healthy.
    Ok,
    /// Something is wrong (for example the object map could not be loaded).
    Degraded,
    /// The image is being migrated.
    Migrating,
}

impl ImageStatus {
    /// Returns the status as the dashboard prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Ok => "OK",
            ImageStatus::Degraded => "degraded",
            ImageStatus::Migrating => "migrating",
        }
    }
}

/// A client that has the image open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Who it is (for NBD: the peer address).
    pub client: String,
    /// When it opened the image.
    pub since: Timestamp,
    /// True when it holds the image open for writing.
    pub writable: bool,
}

/// Everything known about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Unique id within the pool.
    pub id: String,
    /// Name.
    pub name: ImageName,
    /// Pool.
    pub pool: PoolName,
    /// Namespace.
    pub namespace: Namespace,
    /// Virtual size in bytes.
    pub size_bytes: u64,
    /// Object order.
    pub order: ObjectOrder,
    /// Number of objects the size spans.
    pub num_objs: u64,
    /// Prefix of data object names (`rbd_data.<id>`).
    pub block_name_prefix: String,
    /// Enabled features.
    pub features: Features,
    /// Stripe layout.
    pub striping: Striping,
    /// Separate data pool, if any.
    pub data_pool: Option<PoolName>,
    /// Parent, for clones.
    pub parent: Option<ParentInfo>,
    /// Creation time.
    pub created: Timestamp,
    /// Last modification of data or metadata.
    pub modified: Timestamp,
    /// Number of user snapshots.
    pub snapshot_count: u64,
    /// Snapshot limit, if set.
    pub snap_limit: Option<u64>,
    /// Status.
    pub status: ImageStatus,
    /// Why the backend reports that status, when it is not OK (`3 checksum error(s) ...`).
    pub status_reason: Option<String>,
    /// Clients that have the image open.
    pub watchers: Vec<Watcher>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Id, increasing with creation.
    pub id: SnapId,
    /// Name.
    pub name: SnapName,
    /// Image size when the snapshot was taken, in bytes.
    pub size_bytes: u64,
    /// Creation time.
    pub timestamp: Timestamp,
    /// Protected snapshots cannot be removed and may be cloned.
    pub protected: bool,
    /// Number of clones of this snapshot.
    pub children: u64,
}

/// A clone of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Pool of the clone.
    pub pool: PoolName,
    /// Namespace of the clone.
    pub namespace: Namespace,
    /// Name of the clone.
    pub image: ImageName,
    /// Id of the clone.
    pub image_id: String,
    /// True when the clone is in the trash.
    pub in_trash: bool,
}

/// Why an image is in the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashSource {
    /// Moved by a user.
    User,
    /// Half-removed: the removal started and must be finished.
    Removing,
}

impl TrashSource {
    /// Returns the name the reference uses (`USER`, `REMOVING`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrashSource::User => "USER",
            TrashSource::Removing => "REMOVING",
        }
    }
}

/// A trash entry's state as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashStatus {
    /// Waiting for expiration or a user.
    Normal,
    /// Being removed right now.
    Purging,
}

impl TrashStatus {
    /// Returns the status as the dashboard prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrashStatus::Normal => "normal",
            TrashStatus::Purging => "purging",
        }
    }
}

/// One image in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// Image id (the key for restore and remove).
    pub id: String,
    /// Original name.
    pub name: ImageName,
    /// Pool.
    pub pool: PoolName,
    /// Namespace.
    pub namespace: Namespace,
    /// Why it is there.
    pub source: TrashSource,
    /// Whether it is being removed now.
    pub status: TrashStatus,
    /// When it was moved to the trash.
    pub deletion_time: Timestamp,
    /// Before this time it cannot be removed without force.
    pub deferment_end_time: Timestamp,
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Ids of the entries removed.
    pub removed: Vec<String>,
    /// Entries that stayed, with the reason (clones depend on them, snapshots, ...).
    pub skipped: Vec<(String, Error)>,
}

/// What a scrub (`Backend::scrub`) checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Images whose layers were checked.
    pub images: u64,
    /// 4 KiB blocks read and checked against their checksums.
    pub blocks_checked: u64,
    /// Every block whose data does not match its checksum.
    pub errors: Vec<ScrubError>,
}

/// One damaged block a scrub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubError {
    /// The image, as `pool/[namespace/]name`.
    pub image: String,
    /// Where the block is seen: `head`, `@snapshot` (the layer a snapshot froze), or `hidden` (a layer only older
    /// snapshots read through).
    pub view: String,
    /// The layer holding the block.
    pub layer: u64,
    /// The block's offset in the image, in bytes.
    pub offset: u64,
}

/// Space use of one image or snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuEntry {
    /// The snapshot, or `None` for the image head.
    pub snap: Option<SnapName>,
    /// Virtual size.
    pub provisioned_bytes: u64,
    /// Bytes stored for this snapshot or head alone (changed since the previous snapshot).
    pub used_bytes: u64,
}

/// A changed extent reported by a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// True when the extent holds data; false when it became zero (discarded).
    pub exists: bool,
}

/// How a block range reads, for NBD `base:allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Data is stored (here or in an ancestor).
    Data,
    /// Reads as zeros and stores nothing.
    Hole,
}

/// A run of blocks in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockExtent {
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Its state.
    pub state: BlockState,
}

/// A pool with its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Name.
    pub name: PoolName,
    /// Numeric id.
    pub id: u64,
    /// Application tags (`rbd` for block images).
    pub applications: Vec<String>,
    /// Images in the pool (all namespaces, trash excluded).
    pub image_count: u64,
    /// Sum of the images' virtual sizes.
    pub provisioned_bytes: u64,
    /// Bytes stored for the pool's images and snapshots.
    pub used_bytes: u64,
    /// Objects holding data (the embedded engine: allocated objects of every layer; Ceph: RADOS objects).
    pub objects: u64,
    /// The pool's quota in bytes, as `ceph osd pool set-quota POOL max_bytes` sets it (0: none).
    pub quota_max_bytes: u64,
    /// The pool's quota in objects, as `ceph osd pool set-quota POOL max_objects` sets it (0: none).
    pub quota_max_objects: u64,
    /// Healthy or not.
    pub healthy: bool,
}

impl PoolInfo {
    /// Whether the pool reached a quota: writes that need new space answer EDQUOT, as Ceph's full pools do.
    pub fn quota_reached(&self) -> bool {
        (self.quota_max_bytes > 0 && self.used_bytes >= self.quota_max_bytes)
            || (self.quota_max_objects > 0 && self.objects >= self.quota_max_objects)
    }
}

/// A namespace with its image count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Name.
    pub name: Namespace,
    /// Images in it (trash excluded).
    pub image_count: u64,
}

/// A reference to an image by name, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageListEntry {
    /// Name.
    pub name: ImageName,
    /// Id.
    pub id: String,
}

/// Which resize is asked for: shrinking must be said explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizePolicy {
    /// Refuse to make the image smaller.
    GrowOnly,
    /// Allow shrinking; data beyond the new size is discarded.
    AllowShrink,
}

/// How to open an image for I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenTarget {
    /// The image head, read-write (takes the exclusive lock where the feature is on).
    Head,
    /// The image head, read-only.
    HeadReadOnly,
    /// A snapshot, always read-only.
    Snapshot(SnapName),
}

/// A data copy of an image into a new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    /// Snapshot to copy from, or the head.
    pub snap: Option<SnapName>,
    /// Destination.
    pub dest: crate::names::ImageSpec,
    /// Layout and features of the destination; `None` fields are taken from the source.
    pub order: Option<ObjectOrder>,
    /// Features of the destination.
    pub features: Option<Features>,
    /// Striping of the destination.
    pub striping: Option<(u64, u64)>,
}

impl CopyRequest {
    /// A copy of the head to `dest` with the source's layout.
    pub fn to(dest: crate::names::ImageSpec) -> CopyRequest {
        CopyRequest { snap: None, dest, order: None, features: None, striping: None }
    }
}

/// Options of a clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRequest {
    /// Object order of the clone; `None` inherits the parent's.
    pub order: Option<ObjectOrder>,
    /// Features of the clone; `None` inherits the parent's (minus implicit ones).
    pub features: Option<Features>,
    /// Striping of the clone; `None` inherits the parent's.
    pub striping: Option<(u64, u64)>,
}

impl CloneRequest {
    /// A clone that inherits everything from the parent.
    pub fn inherit() -> CloneRequest {
        CloneRequest { order: None, features: None, striping: None }
    }
}

/// A snapshot of an image, used where an API takes both names (children, clone source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// Pool of the parent.
    pub pool: PoolName,
    /// Namespace of the parent.
    pub namespace: Namespace,
    /// Image name of the parent.
    pub image: ImageName,
    /// Snapshot name.
    pub snap: SnapName,
}
