//! An open librbd image ([`Image`]): its properties, the operations librbd runs on an open image (resize, copy,
//! flatten, snapshots, metadata, locks, diffs) and synchronous I/O. Asynchronous I/O is in [`crate::aio`].
//!
//! An `Image` may be shared between threads: librbd serialises operations on one image internally and I/O calls
//! may run concurrently. Switching the snapshot an image reads ([`Image::set_snap`]) changes what every caller
//! sees, so it takes `&mut self`.

use std::ffi::{c_char, c_int, c_void};
use std::fmt;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::sync::{Mutex, PoisonError};

use basalt_core::{Error, ErrorKind, Result, Timestamp};

use crate::error::{check, check_i64, from_errno};
use crate::ffi;
use crate::progress::ProgressFn;
use crate::rados::{Cluster, IoCtx};
use crate::rbd::{
    ConfigOption, ImageOptions, config_options_from_raw, fill_key_values, fill_list, fill_string, with_progress,
};
use crate::util::{c_string, c_string_opt, opt_ptr, string_from_ptr, timestamp};

/// The largest single librbd I/O call; longer requests are split (librbd refuses discards and zeroings longer than
/// `INT_MAX`, and reports byte counts in an `int` for some calls).
pub const IO_CHUNK_BYTES: u64 = 1 << 30;

/// What `rbd_stat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStat {
    /// Size in bytes (of the snapshot, when the image is open at one).
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
    /// Number of objects the size spans.
    pub num_objs: u64,
    /// Object size as a power of two.
    pub order: u8,
}

/// The kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapNamespace {
    /// A user snapshot.
    User,
    /// Part of a group snapshot.
    Group,
    /// Removed while clones (format 2) still depend on it.
    Trash,
    /// Made by snapshot-based mirroring.
    Mirror,
    /// A value this version does not know.
    Unknown(u32),
}

impl SnapNamespace {
    fn from_raw(raw: ffi::rbd_snap_namespace_type_t) -> SnapNamespace {
        match raw {
            ffi::RBD_SNAP_NAMESPACE_TYPE_USER => SnapNamespace::User,
            ffi::RBD_SNAP_NAMESPACE_TYPE_GROUP => SnapNamespace::Group,
            ffi::RBD_SNAP_NAMESPACE_TYPE_TRASH => SnapNamespace::Trash,
            ffi::RBD_SNAP_NAMESPACE_TYPE_MIRROR => SnapNamespace::Mirror,
            other => SnapNamespace::Unknown(other),
        }
    }
}

/// A snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapEntry {
    /// The snapshot id (increasing with creation).
    pub id: u64,
    /// The image size when it was taken.
    pub size: u64,
    /// Its name (for trash-namespace snapshots, an internal name).
    pub name: String,
    /// Its kind.
    pub namespace: SnapNamespace,
}

/// An image named across pools and namespaces (a parent or a child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedImage {
    /// Pool id.
    pub pool_id: i64,
    /// Pool name.
    pub pool_name: String,
    /// Namespace (empty: the default one).
    pub pool_namespace: String,
    /// Image id.
    pub image_id: String,
    /// Image name.
    pub image_name: String,
    /// Whether the image is in the trash.
    pub trash: bool,
}

impl LinkedImage {
    /// # Safety
    ///
    /// `raw` must have been filled by librbd.
    unsafe fn from_raw(raw: &ffi::rbd_linked_image_spec_t) -> LinkedImage {
        LinkedImage {
            pool_id: raw.pool_id,
            // SAFETY: filled by librbd (guaranteed by the caller).
            pool_name: unsafe { string_from_ptr(raw.pool_name) },
            // SAFETY: as above.
            pool_namespace: unsafe { string_from_ptr(raw.pool_namespace) },
            // SAFETY: as above.
            image_id: unsafe { string_from_ptr(raw.image_id) },
            // SAFETY: as above.
            image_name: unsafe { string_from_ptr(raw.image_name) },
            trash: raw.trash,
        }
    }
}

/// The parent of a clone: an image and one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    /// The parent image.
    pub image: LinkedImage,
    /// The parent snapshot's id.
    pub snap_id: u64,
    /// The parent snapshot's name.
    pub snap_name: String,
    /// The parent snapshot's kind (`Trash` once it was removed while this clone exists).
    pub snap_namespace: SnapNamespace,
}

/// A client watching an image (it has the image open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// The client's address (`127.0.0.1:0/123456`).
    pub addr: String,
    /// The client's global id (compare with [`Cluster::instance_id`]).
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

/// A range of a diff: `exists` false means the range was discarded (reads as zeros) since the start snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Start in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Whether the range holds data (false: it became a hole).
    pub exists: bool,
}

/// Space use of one snapshot or of the head, as `rbd du` computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuEntry {
    /// The snapshot (`None`: the head).
    pub snap: Option<String>,
    /// The snapshot id (`None`: the head).
    pub snap_id: Option<u64>,
    /// Provisioned bytes (the size).
    pub provisioned_bytes: u64,
    /// Bytes of whole objects written since the previous snapshot.
    pub used_bytes: u64,
}

/// The two kinds of managed lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The exclusive lock (the `exclusive-lock` feature).
    Exclusive,
    /// A shared lock.
    Shared,
}

impl LockMode {
    fn to_raw(self) -> ffi::rbd_lock_mode_t {
        match self {
            LockMode::Exclusive => ffi::RBD_LOCK_MODE_EXCLUSIVE,
            LockMode::Shared => ffi::RBD_LOCK_MODE_SHARED,
        }
    }
}

/// How `write_zeroes` may leave the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroFlags {
    /// May deallocate (the range becomes a hole).
    MayUnmap,
    /// Keep the range allocated (thick provisioning).
    ThickProvision,
}

impl ZeroFlags {
    pub(crate) fn to_raw(self) -> c_int {
        match self {
            ZeroFlags::MayUnmap => 0,
            ZeroFlags::ThickProvision => ffi::RBD_WRITE_ZEROES_FLAG_THICK_PROVISION as c_int,
        }
    }
}

/// An open image, closed on drop (an error on close is lost then; call [`Image::close`] to see it).
pub struct Image {
    raw: ffi::rbd_image_t,
    /// Keeps the connection alive while the image is open.
    _cluster: Cluster,
    /// `pool[/namespace]/name[@snap]`, for messages.
    label: String,
    read_only: bool,
}

// SAFETY: librbd image handles are thread-safe for all the calls made through `&self` (librbd locks internally);
// the one call that changes what the handle reads (rbd_snap_set) takes `&mut self`; close happens in Drop only.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: `raw` is an open image, closed once (close() nulls it).
            unsafe { ffi::rbd_close(self.raw) };
        }
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image").field("label", &self.label).field("read_only", &self.read_only).finish()
    }
}

/// How an image is opened.
#[derive(Clone, Copy)]
enum OpenMode {
    ReadWrite,
    ReadOnly,
}

impl Image {
    fn open_with(io: &IoCtx, name: &str, snap: Option<&str>, mode: OpenMode, by_id: bool) -> Result<Image> {
        let c_name = c_string(name, if by_id { "image id" } else { "image name" })?;
        let c_snap = c_string_opt(snap, "snapshot name")?;
        let mut raw: ffi::rbd_image_t = ptr::null_mut();
        let label = match snap {
            Some(snap) => format!("{}/{name}@{snap}", io.label()),
            None => format!("{}/{name}", io.label()),
        };
        // SAFETY: valid context, NUL-terminated name, optional snapshot (null: head), valid out-pointer.
        let ret = unsafe {
            match (mode, by_id) {
                (OpenMode::ReadWrite, false) => ffi::rbd_open(io.raw(), c_name.as_ptr(), &mut raw, opt_ptr(&c_snap)),
                (OpenMode::ReadWrite, true) => {
                    ffi::rbd_open_by_id(io.raw(), c_name.as_ptr(), &mut raw, opt_ptr(&c_snap))
                }
                (OpenMode::ReadOnly, false) => {
                    ffi::rbd_open_read_only(io.raw(), c_name.as_ptr(), &mut raw, opt_ptr(&c_snap))
                }
                (OpenMode::ReadOnly, true) => {
                    ffi::rbd_open_by_id_read_only(io.raw(), c_name.as_ptr(), &mut raw, opt_ptr(&c_snap))
                }
            }
        };
        check(ret, || format!("opening image {label}"))?;
        let read_only = matches!(mode, OpenMode::ReadOnly) || snap.is_some();
        Ok(Image { raw, _cluster: io.cluster().clone(), label, read_only })
    }

    /// Opens the head of an image for reading and writing (registers a watch).
    pub fn open(io: &IoCtx, name: &str) -> Result<Image> {
        Image::open_with(io, name, None, OpenMode::ReadWrite, false)
    }

    /// Opens an image at a snapshot: reads see the snapshot, writes fail with EROFS. Unlike
    /// [`Image::open_read_only`], this registers a watch and so sees later changes of the image's metadata.
    pub fn open_at_snap(io: &IoCtx, name: &str, snap: &str) -> Result<Image> {
        Image::open_with(io, name, Some(snap), OpenMode::ReadWrite, false)
    }

    /// Opens an image (at `snap`, or the head) read-only, without a watch: not listed as a watcher, and its view of
    /// the metadata may go stale.
    pub fn open_read_only(io: &IoCtx, name: &str, snap: Option<&str>) -> Result<Image> {
        Image::open_with(io, name, snap, OpenMode::ReadOnly, false)
    }

    /// Opens an image by id (works for images in the trash too), at `snap` or the head.
    pub fn open_by_id(io: &IoCtx, id: &str, snap: Option<&str>, read_only: bool) -> Result<Image> {
        let mode = if read_only { OpenMode::ReadOnly } else { OpenMode::ReadWrite };
        Image::open_with(io, id, snap, mode, true)
    }

    /// Closes the image, reporting a failure to flush.
    pub fn close(mut self) -> Result<()> {
        let raw = std::mem::replace(&mut self.raw, ptr::null_mut());
        // SAFETY: `raw` is an open image; Drop will not close it again (it is null now).
        check(unsafe { ffi::rbd_close(raw) }, || format!("closing image {}", self.label))?;
        Ok(())
    }

    pub(crate) fn raw(&self) -> ffi::rbd_image_t {
        self.raw
    }

    /// The raw handle, for librbd/librados calls this wrapper does not cover ([`crate::ffi`]). It stays valid while
    /// `self` lives; do not close or destroy it.
    pub fn as_raw(&self) -> ffi::rbd_image_t {
        self.raw
    }

    /// `pool[/namespace]/name[@snap]`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether writes are refused (opened read-only or at a snapshot).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    // --- properties ---

    /// Size, object size, object count and order.
    pub fn stat(&self) -> Result<ImageStat> {
        // SAFETY: rbd_image_info_t is plain data (integers and byte arrays), valid when zeroed.
        let mut info: ffi::rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid image and out-pointer of the given size.
        check(unsafe { ffi::rbd_stat(self.raw, &mut info, size_of::<ffi::rbd_image_info_t>()) }, || {
            format!("reading stat of image {}", self.label)
        })?;
        Ok(ImageStat {
            size: info.size,
            obj_size: info.obj_size,
            num_objs: info.num_objs,
            order: u8::try_from(info.order).unwrap_or(0),
        })
    }

    /// Calls a librbd getter that fills one `u64`.
    fn get_u64(&self, getter: unsafe extern "C" fn(ffi::rbd_image_t, *mut u64) -> c_int, what: &str) -> Result<u64> {
        let mut value = 0u64;
        // SAFETY: valid image and out-pointer; every getter passed here has this signature and contract.
        check(unsafe { getter(self.raw, &mut value) }, || format!("reading {what} of image {}", self.label))?;
        Ok(value)
    }

    /// Size in bytes (of the snapshot when open at one).
    pub fn size(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_size, "size")
    }

    /// Feature bits (`RBD_FEATURE_*`).
    pub fn features(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_features, "features")
    }

    /// Operation feature bits (`RBD_OPERATION_FEATURE_*`: clone-parent, clone-child, snap-trash...).
    pub fn op_features(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_op_features, "op features")
    }

    /// Image flags (`RBD_FLAG_OBJECT_MAP_INVALID`, `RBD_FLAG_FAST_DIFF_INVALID`).
    pub fn flags(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_flags, "flags")
    }

    /// Enables (`enabled`) or disables the given feature bits.
    pub fn update_features(&self, features: u64, enabled: bool) -> Result<()> {
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_update_features(self.raw, features, u8::from(enabled)) }, || {
            let action = if enabled { "enabling" } else { "disabling" };
            format!("{action} features {features:#x} of image {}", self.label)
        })?;
        Ok(())
    }

    /// Stripe unit in bytes.
    pub fn stripe_unit(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_stripe_unit, "stripe unit")
    }

    /// Stripe count.
    pub fn stripe_count(&self) -> Result<u64> {
        self.get_u64(ffi::rbd_get_stripe_count, "stripe count")
    }

    /// The id of the pool holding the data objects (the image's own pool without a data pool).
    pub fn data_pool_id(&self) -> Result<i64> {
        // SAFETY: valid image.
        let id = unsafe { ffi::rbd_get_data_pool_id(self.raw) };
        if id < 0 {
            return Err(from_errno(
                i32::try_from(id).unwrap_or(-libc::EIO),
                format!("reading data pool of {}", self.label),
            ));
        }
        Ok(id)
    }

    /// The image id.
    pub fn id(&self) -> Result<String> {
        self.grow_string(|raw, buf, len| {
            // SAFETY: the buffer is writable for `len` bytes.
            unsafe { ffi::rbd_get_id(raw, buf, len) }
        })
        .map_err(|err| err.context(format!("reading id of image {}", self.label)))
    }

    /// The prefix of the data objects (`rbd_data.<id>`).
    pub fn block_name_prefix(&self) -> Result<String> {
        self.grow_string(|raw, buf, len| {
            // SAFETY: the buffer is writable for `len` bytes.
            unsafe { ffi::rbd_get_block_name_prefix(raw, buf, len) }
        })
        .map_err(|err| err.context(format!("reading block name prefix of image {}", self.label)))
    }

    /// For getters that take a fixed buffer and fail with ERANGE without saying how much they need.
    fn grow_string(&self, call: impl Fn(ffi::rbd_image_t, *mut c_char, usize) -> c_int) -> Result<String> {
        let mut capacity = 64usize;
        loop {
            let mut buf = vec![0u8; capacity];
            let ret = call(self.raw, buf.as_mut_ptr().cast(), capacity);
            if ret == -libc::ERANGE && capacity < 1 << 16 {
                capacity *= 4;
                continue;
            }
            check(ret, || "librbd")?;
            return Ok(crate::util::string_from_buf(&buf));
        }
    }

    /// The image's current name.
    pub fn name(&self) -> Result<String> {
        fill_string(
            // SAFETY: the buffer is writable for `*len` bytes.
            |buf, len| unsafe { ffi::rbd_get_name(self.raw, buf, len) },
            || format!("reading name of image {}", self.label),
        )
    }

    /// Whether this is a format 1 image.
    pub fn is_old_format(&self) -> Result<bool> {
        let mut old = 0u8;
        // SAFETY: valid image and out-pointer.
        check(unsafe { ffi::rbd_get_old_format(self.raw, &mut old) }, || format!("reading format of {}", self.label))?;
        Ok(old != 0)
    }

    /// How much of a clone still reads through to its parent, in bytes (0 without a parent).
    pub fn overlap(&self) -> Result<u64> {
        let mut overlap = 0u64;
        // SAFETY: valid image and out-pointer.
        let ret = unsafe { ffi::rbd_get_overlap(self.raw, &mut overlap) };
        if ret == -libc::ENOENT {
            return Ok(0);
        }
        check(ret, || format!("reading parent overlap of image {}", self.label))?;
        Ok(overlap)
    }

    fn timestamp_of(
        &self,
        what: &str,
        call: unsafe extern "C" fn(ffi::rbd_image_t, *mut ffi::timespec) -> c_int,
    ) -> Result<Timestamp> {
        let mut time = ffi::timespec::default();
        // SAFETY: valid image and out-pointer; `call` is one of librbd's timestamp getters.
        check(unsafe { call(self.raw, &mut time) }, || format!("reading {what} time of image {}", self.label))?;
        Ok(timestamp(time.tv_sec))
    }

    /// When the image was created.
    pub fn create_timestamp(&self) -> Result<Timestamp> {
        self.timestamp_of("create", ffi::rbd_get_create_timestamp)
    }

    /// When the image was last read (updated at most every `rbd_atime_update_interval`).
    pub fn access_timestamp(&self) -> Result<Timestamp> {
        self.timestamp_of("access", ffi::rbd_get_access_timestamp)
    }

    /// When the image was last written (updated at most every `rbd_mtime_update_interval`).
    pub fn modify_timestamp(&self) -> Result<Timestamp> {
        self.timestamp_of("modify", ffi::rbd_get_modify_timestamp)
    }

    /// The parent of a clone, `None` for an image without one.
    pub fn parent(&self) -> Result<Option<ParentSpec>> {
        let mut image = ffi::rbd_linked_image_spec_t::default();
        let mut snap = ffi::rbd_snap_spec_t::default();
        // SAFETY: valid image and out-pointers.
        let ret = unsafe { ffi::rbd_get_parent(self.raw, &mut image, &mut snap) };
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, || format!("reading parent of image {}", self.label))?;
        let parent = ParentSpec {
            // SAFETY: librbd filled `image`.
            image: unsafe { LinkedImage::from_raw(&image) },
            snap_id: snap.id,
            // SAFETY: librbd filled `snap`.
            snap_name: unsafe { string_from_ptr(snap.name) },
            snap_namespace: SnapNamespace::from_raw(snap.namespace_type),
        };
        // SAFETY: frees the strings librbd allocated, once each.
        unsafe {
            ffi::rbd_linked_image_spec_cleanup(&mut image);
            ffi::rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// Clients watching the image (this handle included, unless opened read-only).
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        let (mut entries, count) = fill_list::<ffi::rbd_image_watcher_t, usize>(
            8,
            // SAFETY: the array holds `*count` entries.
            |array, count| unsafe { ffi::rbd_watchers_list(self.raw, array, count) },
            || format!("listing watchers of image {}", self.label),
        )?;
        let watchers = entries[..count]
            .iter()
            .map(|entry| Watcher {
                // SAFETY: librbd filled the first `count` entries.
                addr: unsafe { string_from_ptr(entry.addr) },
                id: entry.id,
                cookie: entry.cookie,
            })
            .collect();
        // SAFETY: frees the filled entries, once.
        unsafe { ffi::rbd_watchers_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(watchers)
    }

    /// Every `rbd_*` option's effective value for this image, with its source.
    pub fn config_list(&self) -> Result<Vec<ConfigOption>> {
        let (mut entries, count) = fill_list::<ffi::rbd_config_option_t, c_int>(
            256,
            // SAFETY: the array holds `*count` entries.
            |array, count| unsafe { ffi::rbd_config_image_list(self.raw, array, count) },
            || format!("listing the configuration of image {}", self.label),
        )?;
        // SAFETY: librbd filled the first `count` entries.
        let options = unsafe { config_options_from_raw(&entries[..count]) };
        let count = c_int::try_from(count).unwrap_or(c_int::MAX);
        // SAFETY: frees the filled entries, once.
        unsafe { ffi::rbd_config_image_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(options)
    }

    // --- operations ---

    /// Changes the size; shrinking needs `allow_shrink` (EINVAL otherwise).
    pub fn resize(&self, size_bytes: u64, allow_shrink: bool, progress: &mut ProgressFn<'_>) -> Result<()> {
        with_progress(
            progress,
            // SAFETY: valid image; the callback data outlives the call.
            |callback, data| unsafe { ffi::rbd_resize2(self.raw, size_bytes, allow_shrink, callback, data) },
            || format!("resizing image {} to {size_bytes} bytes", self.label),
        )
    }

    /// Copies this image's data as it reads now (head or the open snapshot) into a new image `dest_name` in
    /// `dest_io`; `sparse_size` is the granularity at which zeroed data is left unallocated in the copy (0: 4096, the
    /// CLI's default).
    pub fn copy(
        &self,
        dest_io: &IoCtx,
        dest_name: &str,
        options: &ImageOptions,
        sparse_size: usize,
        progress: &mut ProgressFn<'_>,
    ) -> Result<()> {
        let c_dest = c_string(dest_name, "image name")?;
        let raw_options = options.to_raw()?;
        let sparse_size = if sparse_size == 0 { 4096 } else { sparse_size };
        with_progress(
            progress,
            // SAFETY: valid image, context, name and options; the callback data outlives the call.
            |callback, data| unsafe {
                ffi::rbd_copy_with_progress4(
                    self.raw,
                    dest_io.raw(),
                    c_dest.as_ptr(),
                    raw_options.raw(),
                    callback,
                    data,
                    sparse_size,
                )
            },
            || format!("copying image {} to {}/{dest_name}", self.label, dest_io.label()),
        )
    }

    /// Copies the image with all its snapshots into `dest_name` in `dest_io`; a clone stays a clone unless
    /// `options.flatten`.
    pub fn deep_copy(
        &self,
        dest_io: &IoCtx,
        dest_name: &str,
        options: &ImageOptions,
        progress: &mut ProgressFn<'_>,
    ) -> Result<()> {
        let c_dest = c_string(dest_name, "image name")?;
        let raw_options = options.to_raw()?;
        with_progress(
            progress,
            // SAFETY: valid image, context, name and options; the callback data outlives the call.
            |callback, data| unsafe {
                ffi::rbd_deep_copy_with_progress(
                    self.raw,
                    dest_io.raw(),
                    c_dest.as_ptr(),
                    raw_options.raw(),
                    callback,
                    data,
                )
            },
            || format!("deep-copying image {} to {}/{dest_name}", self.label, dest_io.label()),
        )
    }

    /// Copies the parent's data into this clone and detaches it (EINVAL without a parent).
    pub fn flatten(&self, progress: &mut ProgressFn<'_>) -> Result<()> {
        with_progress(
            progress,
            // SAFETY: valid image; the callback data outlives the call.
            |callback, data| unsafe { ffi::rbd_flatten_with_progress(self.raw, callback, data) },
            || format!("flattening image {}", self.label),
        )
    }

    // --- metadata ---

    /// One metadata value (ENOENT if absent).
    pub fn metadata_get(&self, key: &str) -> Result<String> {
        let c_key = c_string(key, "metadata key")?;
        fill_string(
            // SAFETY: the buffer is writable for `*len` bytes.
            |buf, len| unsafe { ffi::rbd_metadata_get(self.raw, c_key.as_ptr(), buf, len) },
            || format!("reading metadata {key} of image {}", self.label),
        )
    }

    /// Sets one metadata value (`conf_<option>` keys are image configuration overrides).
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let c_key = c_string(key, "metadata key")?;
        let c_value = c_string(value, "metadata value")?;
        // SAFETY: valid image and strings.
        check(unsafe { ffi::rbd_metadata_set(self.raw, c_key.as_ptr(), c_value.as_ptr()) }, || {
            format!("setting metadata {key} of image {}", self.label)
        })?;
        Ok(())
    }

    /// Removes one metadata key (ENOENT if absent).
    pub fn metadata_remove(&self, key: &str) -> Result<()> {
        let c_key = c_string(key, "metadata key")?;
        // SAFETY: valid image and key.
        check(unsafe { ffi::rbd_metadata_remove(self.raw, c_key.as_ptr()) }, || {
            format!("removing metadata {key} of image {}", self.label)
        })?;
        Ok(())
    }

    /// All metadata, sorted by key.
    pub fn metadata_list(&self) -> Result<Vec<(String, String)>> {
        fill_key_values(
            // SAFETY: both buffers are writable for their lengths; start key "" (librbd 16 throws a C++ exception through
            // the C call, aborting the process, for a null start key), no limit.
            |keys, keys_len, values, values_len| unsafe {
                ffi::rbd_metadata_list(self.raw, c"".as_ptr(), 0, keys, keys_len, values, values_len)
            },
            || format!("listing metadata of image {}", self.label),
        )
    }

    // --- snapshots ---

    /// Creates a snapshot (EEXIST for a taken name, EDQUOT over the snapshot limit).
    pub fn snap_create(&self, snap: &str) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        let mut progress = crate::progress::no_progress();
        with_progress(
            &mut progress,
            // SAFETY: valid image and name; flags 0 (quiesce watchers as librbd does by default).
            |callback, data| unsafe { ffi::rbd_snap_create2(self.raw, c_snap.as_ptr(), 0, callback, data) },
            || format!("creating snapshot {}@{snap}", self.label),
        )
    }

    /// Every snapshot in id order, of every kind (filter on [`SnapEntry::namespace`] for user snapshots).
    pub fn snap_list(&self) -> Result<Vec<SnapEntry>> {
        // rbd_snap_list writes a terminating entry, so it asks for one more than the number of snapshots.
        let (mut entries, count) = fill_list::<ffi::rbd_snap_info_t, c_int>(
            16,
            |array, count| {
                // SAFETY: the array holds `*count` entries; on success the return value is the number filled.
                let ret = unsafe { ffi::rbd_snap_list(self.raw, array, count) };
                if ret >= 0 {
                    *count = ret;
                }
                ret
            },
            || format!("listing snapshots of image {}", self.label),
        )?;
        let mut snaps = Vec::with_capacity(count);
        for entry in &entries[..count] {
            let mut namespace = ffi::RBD_SNAP_NAMESPACE_TYPE_USER;
            // SAFETY: valid image and out-pointer.
            let ret = unsafe { ffi::rbd_snap_get_namespace_type(self.raw, entry.id, &mut namespace) };
            // A snapshot removed meanwhile keeps the user kind rather than failing the listing.
            let namespace = if ret < 0 { SnapNamespace::User } else { SnapNamespace::from_raw(namespace) };
            snaps.push(SnapEntry {
                id: entry.id,
                size: entry.size,
                // SAFETY: librbd filled the first `count` entries.
                name: unsafe { string_from_ptr(entry.name) },
                namespace,
            });
        }
        // SAFETY: frees the names up to the terminating entry, once.
        unsafe { ffi::rbd_snap_list_end(entries.as_mut_ptr()) };
        Ok(snaps)
    }

    /// Whether a user snapshot of that name exists.
    pub fn snap_exists(&self, snap: &str) -> Result<bool> {
        let c_snap = c_string(snap, "snapshot name")?;
        let mut exists = false;
        // SAFETY: valid image, name and out-pointer.
        check(unsafe { ffi::rbd_snap_exists(self.raw, c_snap.as_ptr(), &mut exists) }, || {
            format!("looking up snapshot {}@{snap}", self.label)
        })?;
        Ok(exists)
    }

    /// The id of a snapshot (ENOENT if missing).
    pub fn snap_id(&self, snap: &str) -> Result<u64> {
        let c_snap = c_string(snap, "snapshot name")?;
        let mut id = 0u64;
        // SAFETY: valid image, name and out-pointer.
        check(unsafe { ffi::rbd_snap_get_id(self.raw, c_snap.as_ptr(), &mut id) }, || {
            format!("looking up snapshot {}@{snap}", self.label)
        })?;
        Ok(id)
    }

    /// Renames a snapshot.
    pub fn snap_rename(&self, snap: &str, new_name: &str) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        let c_new = c_string(new_name, "snapshot name")?;
        // SAFETY: valid image and names.
        check(unsafe { ffi::rbd_snap_rename(self.raw, c_snap.as_ptr(), c_new.as_ptr()) }, || {
            format!("renaming snapshot {}@{snap} to {new_name}", self.label)
        })?;
        Ok(())
    }

    /// Protects a snapshot (EBUSY if already protected).
    pub fn snap_protect(&self, snap: &str) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        // SAFETY: valid image and name.
        check(unsafe { ffi::rbd_snap_protect(self.raw, c_snap.as_ptr()) }, || {
            format!("protecting snapshot {}@{snap}", self.label)
        })?;
        Ok(())
    }

    /// Unprotects a snapshot (EINVAL if not protected, EBUSY while clones exist).
    pub fn snap_unprotect(&self, snap: &str) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        // SAFETY: valid image and name.
        check(unsafe { ffi::rbd_snap_unprotect(self.raw, c_snap.as_ptr()) }, || {
            format!("unprotecting snapshot {}@{snap}", self.label)
        })?;
        Ok(())
    }

    /// Whether a snapshot is protected.
    pub fn snap_is_protected(&self, snap: &str) -> Result<bool> {
        let c_snap = c_string(snap, "snapshot name")?;
        let mut protected: c_int = 0;
        // SAFETY: valid image, name and out-pointer.
        check(unsafe { ffi::rbd_snap_is_protected(self.raw, c_snap.as_ptr(), &mut protected) }, || {
            format!("reading protection of snapshot {}@{snap}", self.label)
        })?;
        Ok(protected != 0)
    }

    /// Restores the head's data and size to the snapshot's.
    pub fn snap_rollback(&self, snap: &str, progress: &mut ProgressFn<'_>) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        with_progress(
            progress,
            // SAFETY: valid image and name; the callback data outlives the call.
            |callback, data| unsafe { ffi::rbd_snap_rollback_with_progress(self.raw, c_snap.as_ptr(), callback, data) },
            || format!("rolling back image {} to snapshot {snap}", self.label),
        )
    }

    /// Removes a snapshot; `flags` are `RBD_SNAP_REMOVE_*` (0: refuse a protected snapshot with EBUSY).
    pub fn snap_remove(&self, snap: &str, flags: u32, progress: &mut ProgressFn<'_>) -> Result<()> {
        let c_snap = c_string(snap, "snapshot name")?;
        with_progress(
            progress,
            // SAFETY: valid image and name; the callback data outlives the call.
            |callback, data| unsafe { ffi::rbd_snap_remove2(self.raw, c_snap.as_ptr(), flags, callback, data) },
            || format!("removing snapshot {}@{snap}", self.label),
        )
    }

    /// The snapshot limit, `None` when unlimited.
    pub fn snap_limit(&self) -> Result<Option<u64>> {
        let mut limit = 0u64;
        // SAFETY: valid image and out-pointer.
        check(unsafe { ffi::rbd_snap_get_limit(self.raw, &mut limit) }, || {
            format!("reading snapshot limit of image {}", self.label)
        })?;
        Ok(if limit == u64::MAX { None } else { Some(limit) })
    }

    /// Sets the snapshot limit, or clears it with `None`.
    pub fn snap_set_limit(&self, limit: Option<u64>) -> Result<()> {
        let raw_limit = limit.unwrap_or(u64::MAX);
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_snap_set_limit(self.raw, raw_limit) }, || {
            format!("setting snapshot limit of image {}", self.label)
        })?;
        Ok(())
    }

    /// When a snapshot was taken.
    pub fn snap_timestamp(&self, snap_id: u64) -> Result<Timestamp> {
        let mut time = ffi::timespec::default();
        // SAFETY: valid image and out-pointer.
        check(unsafe { ffi::rbd_snap_get_timestamp(self.raw, snap_id, &mut time) }, || {
            format!("reading time of snapshot {snap_id} of image {}", self.label)
        })?;
        Ok(timestamp(time.tv_sec))
    }

    /// Switches reads to a snapshot (`None`: back to the head). Affects every user of this handle.
    pub fn set_snap(&mut self, snap: Option<&str>) -> Result<()> {
        let c_snap = c_string_opt(snap, "snapshot name")?;
        // SAFETY: valid image, exclusive access, optional name.
        check(unsafe { ffi::rbd_snap_set(self.raw, opt_ptr(&c_snap)) }, || match snap {
            Some(snap) => format!("switching image {} to snapshot {snap}", self.label),
            None => format!("switching image {} to its head", self.label),
        })?;
        Ok(())
    }

    /// The clones of the snapshot the handle is open at (or set to with [`Image::set_snap`]).
    pub fn children(&self) -> Result<Vec<LinkedImage>> {
        self.linked_list(|raw, array, count| {
            // SAFETY: the array holds `*count` entries.
            unsafe { ffi::rbd_list_children3(raw, array, count) }
        })
        .map_err(|err| err.context(format!("listing children of {}", self.label)))
    }

    /// The clones of the open snapshot and their clones, recursively.
    pub fn descendants(&self) -> Result<Vec<LinkedImage>> {
        self.linked_list(|raw, array, count| {
            // SAFETY: the array holds `*count` entries.
            unsafe { ffi::rbd_list_descendants(raw, array, count) }
        })
        .map_err(|err| err.context(format!("listing descendants of {}", self.label)))
    }

    fn linked_list(
        &self,
        call: impl Fn(ffi::rbd_image_t, *mut ffi::rbd_linked_image_spec_t, &mut usize) -> c_int,
    ) -> Result<Vec<LinkedImage>> {
        let (mut entries, count) = fill_list::<ffi::rbd_linked_image_spec_t, usize>(
            8,
            |array, count| call(self.raw, array, count),
            || "librbd".to_owned(),
        )?;
        // SAFETY: librbd filled the first `count` entries.
        let images = entries[..count].iter().map(|entry| unsafe { LinkedImage::from_raw(entry) }).collect();
        // SAFETY: frees the filled entries, once.
        unsafe { ffi::rbd_linked_image_spec_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(images)
    }

    // --- locks ---

    /// Acquires a managed lock (needs the exclusive-lock feature; EBUSY/EROFS while another client holds it).
    pub fn lock_acquire(&self, mode: LockMode) -> Result<()> {
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_lock_acquire(self.raw, mode.to_raw()) }, || {
            format!("acquiring the lock of image {}", self.label)
        })?;
        Ok(())
    }

    /// Releases the managed lock this handle holds.
    pub fn lock_release(&self) -> Result<()> {
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_lock_release(self.raw) }, || format!("releasing the lock of image {}", self.label))?;
        Ok(())
    }

    /// Whether this handle owns the exclusive lock.
    pub fn is_exclusive_lock_owner(&self) -> Result<bool> {
        let mut owner: c_int = 0;
        // SAFETY: valid image and out-pointer.
        check(unsafe { ffi::rbd_is_exclusive_lock_owner(self.raw, &mut owner) }, || {
            format!("reading lock ownership of image {}", self.label)
        })?;
        Ok(owner != 0)
    }

    /// The lock's mode and owners (empty when nobody holds it).
    pub fn lock_owners(&self) -> Result<(LockMode, Vec<String>)> {
        let mut capacity = 8usize;
        loop {
            let mut owners: Vec<*mut c_char> = vec![ptr::null_mut(); capacity];
            let mut count = capacity;
            let mut mode = ffi::RBD_LOCK_MODE_EXCLUSIVE;
            // SAFETY: the array holds `count` pointers; librbd fills at most that many.
            let ret = unsafe { ffi::rbd_lock_get_owners(self.raw, &mut mode, owners.as_mut_ptr(), &mut count) };
            if ret == -libc::ENOENT {
                return Ok((LockMode::Exclusive, Vec::new()));
            }
            if ret == -libc::ERANGE && count > capacity && count < 1 << 16 {
                capacity = count;
                continue;
            }
            check(ret, || format!("listing lock owners of image {}", self.label))?;
            let count = count.min(capacity);
            // SAFETY: librbd filled the first `count` pointers with strings.
            let names = owners[..count].iter().map(|&owner| unsafe { string_from_ptr(owner) }).collect();
            // SAFETY: frees the filled strings, once.
            unsafe { ffi::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), count) };
            let mode = if mode == ffi::RBD_LOCK_MODE_SHARED { LockMode::Shared } else { LockMode::Exclusive };
            return Ok((mode, names));
        }
    }

    /// Breaks another client's lock (blocklisting it, as `rbd lock rm` does).
    pub fn lock_break(&self, mode: LockMode, owner: &str) -> Result<()> {
        let c_owner = c_string(owner, "lock owner")?;
        // SAFETY: valid image and owner.
        check(unsafe { ffi::rbd_lock_break(self.raw, mode.to_raw(), c_owner.as_ptr()) }, || {
            format!("breaking the lock of image {} held by {owner}", self.label)
        })?;
        Ok(())
    }

    // --- diffs and usage ---

    /// Calls `callback(offset, length, exists)` for every extent in `offset..offset+length` that changed since
    /// `from_snap` (`None`: since creation), as the handle reads now (head or the open snapshot). `include_parent`
    /// also reports a clone's data that still comes from its parent; `whole_object` widens extents to whole objects
    /// and, with fast-diff, answers from the object map without reading objects. [`ControlFlow::Break`] stops early
    /// with ECANCELED.
    #[allow(clippy::too_many_arguments)]
    pub fn diff_iterate(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        length: u64,
        include_parent: bool,
        whole_object: bool,
        callback: &mut (dyn FnMut(u64, u64, bool) -> ControlFlow<()> + Send),
    ) -> Result<()> {
        let c_from = c_string_opt(from_snap, "snapshot name")?;
        let state = DiffState { callback: Mutex::new(callback), stopped: Default::default(), panic: Mutex::new(None) };
        // SAFETY: valid image, optional name; `state` outlives the call and is only used through `&`.
        let ret = unsafe {
            ffi::rbd_diff_iterate2(
                self.raw,
                opt_ptr(&c_from),
                offset,
                length,
                u8::from(include_parent),
                u8::from(whole_object),
                Some(diff_trampoline),
                ptr::from_ref(&state).cast_mut().cast(),
            )
        };
        if let Some(payload) = state.panic.into_inner().unwrap_or_else(PoisonError::into_inner) {
            resume_unwind(payload);
        }
        if ret < 0 && state.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Cancelled, format!("diff of image {}: stopped", self.label)));
        }
        check(ret, || format!("computing the diff of image {}", self.label))?;
        Ok(())
    }

    /// The extents [`Image::diff_iterate`] reports, collected over the whole image.
    pub fn diff_extents(
        &self,
        from_snap: Option<&str>,
        include_parent: bool,
        whole_object: bool,
    ) -> Result<Vec<DiffExtent>> {
        let size = self.size()?;
        let mut extents = Vec::new();
        self.diff_iterate(from_snap, 0, size, include_parent, whole_object, &mut |offset, length, exists| {
            extents.push(DiffExtent { offset, length, exists });
            ControlFlow::Continue(())
        })?;
        Ok(extents)
    }

    /// Space use per user snapshot (in id order) and of the head, last, computed as `rbd du` does: the whole
    /// objects written between each snapshot and the previous one. Fast with fast-diff (object map only); without it
    /// librbd lists objects. Leaves the handle at the head.
    pub fn du(&mut self) -> Result<Vec<DuEntry>> {
        let snaps: Vec<SnapEntry> =
            self.snap_list()?.into_iter().filter(|snap| snap.namespace == SnapNamespace::User).collect();
        let mut entries = Vec::with_capacity(snaps.len() + 1);
        let mut previous: Option<String> = None;
        let result = (|| {
            for snap in &snaps {
                self.set_snap(Some(&snap.name))?;
                let used_bytes = self.used_since(previous.as_deref(), snap.size)?;
                entries.push(DuEntry {
                    snap: Some(snap.name.clone()),
                    snap_id: Some(snap.id),
                    provisioned_bytes: snap.size,
                    used_bytes,
                });
                previous = Some(snap.name.clone());
            }
            self.set_snap(None)?;
            let size = self.size()?;
            let used_bytes = self.used_since(previous.as_deref(), size)?;
            entries.push(DuEntry { snap: None, snap_id: None, provisioned_bytes: size, used_bytes });
            Ok(())
        })();
        if result.is_err() {
            // Best effort: leave the handle at the head even after a failure.
            let _ = self.set_snap(None);
        }
        result.map(|()| entries)
    }

    fn used_since(&self, from_snap: Option<&str>, size: u64) -> Result<u64> {
        let mut used = 0u64;
        self.diff_iterate(from_snap, 0, size, false, true, &mut |_, length, exists| {
            if exists {
                used = used.saturating_add(length);
            }
            ControlFlow::Continue(())
        })?;
        Ok(used)
    }

    // --- synchronous I/O ---

    /// Reads into `buf` at `offset`; returns the bytes read (fewer when the range crosses the end of the image; a
    /// read starting past the end fails with EINVAL).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0usize;
        for chunk in buf.chunks_mut(IO_CHUNK_BYTES as usize) {
            let at = offset + done as u64;
            // SAFETY: valid image; the chunk is writable for its length.
            let ret = unsafe { ffi::rbd_read(self.raw, at, chunk.len(), chunk.as_mut_ptr().cast()) };
            let read =
                check_i64(ret as i64, || format!("reading {} bytes at {at} of image {}", chunk.len(), self.label))?;
            let read = usize::try_from(read).unwrap_or(0).min(chunk.len());
            done += read;
            if read < chunk.len() {
                break;
            }
        }
        Ok(done)
    }

    /// Writes `data` at `offset` (EROFS on a read-only handle or while another client holds the exclusive lock it
    /// acquired explicitly; EINVAL when the range crosses the end of the image, after librbd wrote the part inside).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_with_flags(offset, data, 0)
    }

    /// Writes with librados op flags (`LIBRADOS_OP_FLAG_FADVISE_*`).
    pub fn write_with_flags(&self, offset: u64, data: &[u8], op_flags: u32) -> Result<()> {
        let op_flags = c_int::try_from(op_flags).map_err(|_| Error::invalid("bad op flags"))?;
        let mut done = 0usize;
        for chunk in data.chunks(IO_CHUNK_BYTES as usize) {
            let at = offset + done as u64;
            // SAFETY: valid image; the chunk is readable for its length.
            let ret = unsafe { ffi::rbd_write2(self.raw, at, chunk.len(), chunk.as_ptr().cast(), op_flags) };
            let written =
                check_i64(ret as i64, || format!("writing {} bytes at {at} of image {}", chunk.len(), self.label))?;
            if written != chunk.len() as u64 {
                // librbd clips a write that crosses the end of the image and reports the bytes it wrote.
                return Err(Error::invalid(format!(
                    "writing {} bytes at {at} of image {}: only {written} bytes written (the range crosses the end of \
                     the image)",
                    chunk.len(),
                    self.label
                )));
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// Deallocates a range; it then reads as zeros.
    pub fn discard(&self, offset: u64, length: u64) -> Result<()> {
        for (at, piece) in chunks(offset, length) {
            // SAFETY: valid image.
            check(unsafe { ffi::rbd_discard(self.raw, at, piece) }, || {
                format!("discarding {piece} bytes at {at} of image {}", self.label)
            })?;
        }
        Ok(())
    }

    /// Makes a range read as zeros.
    pub fn write_zeroes(&self, offset: u64, length: u64, flags: ZeroFlags) -> Result<()> {
        for (at, piece) in chunks(offset, length) {
            let piece_len = usize::try_from(piece).map_err(|_| Error::invalid("zeroing too long"))?;
            // SAFETY: valid image.
            let ret = unsafe { ffi::rbd_write_zeroes(self.raw, at, piece_len, flags.to_raw(), 0) };
            check_i64(ret as i64, || format!("zeroing {piece} bytes at {at} of image {}", self.label))?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable (writes back librbd's cache).
    pub fn flush(&self) -> Result<()> {
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_flush(self.raw) }, || format!("flushing image {}", self.label))?;
        Ok(())
    }

    /// Drops librbd's cache of the image.
    pub fn invalidate_cache(&self) -> Result<()> {
        // SAFETY: valid image.
        check(unsafe { ffi::rbd_invalidate_cache(self.raw) }, || format!("invalidating the cache of {}", self.label))?;
        Ok(())
    }
}

/// Splits `offset..offset+length` into pieces of at most [`IO_CHUNK_BYTES`].
pub(crate) fn chunks(offset: u64, length: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset.saturating_add(length);
    std::iter::successors(if length == 0 { None } else { Some(offset) }, move |&at| {
        let next = at.saturating_add(IO_CHUNK_BYTES);
        if next < end { Some(next) } else { None }
    })
    .map(move |at| (at, (end - at).min(IO_CHUNK_BYTES)))
}

/// What `diff_trampoline` works on.
struct DiffState<'a, 'f> {
    callback: Mutex<&'a mut (dyn FnMut(u64, u64, bool) -> ControlFlow<()> + Send + 'f)>,
    stopped: std::sync::atomic::AtomicBool,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

unsafe extern "C" fn diff_trampoline(offset: u64, length: usize, exists: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the DiffState that diff_iterate keeps alive during rbd_diff_iterate2; used through `&`.
    let state = unsafe { &*arg.cast::<DiffState<'_, '_>>() };
    if state.stopped.load(std::sync::atomic::Ordering::SeqCst) {
        return -libc::ECANCELED;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut callback = state.callback.lock().unwrap_or_else(PoisonError::into_inner);
        (*callback)(offset, length as u64, exists != 0)
    }));
    match outcome {
        Ok(ControlFlow::Continue(())) => 0,
        Ok(ControlFlow::Break(())) => {
            state.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            -libc::ECANCELED
        }
        Err(payload) => {
            state.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            state.panic.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(payload);
            -libc::ECANCELED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range() {
        assert_eq!(chunks(5, 0).count(), 0);
        assert_eq!(chunks(5, 10).collect::<Vec<_>>(), [(5, 10)]);
        let pieces: Vec<_> = chunks(1, 2 * IO_CHUNK_BYTES + 3).collect();
        assert_eq!(pieces, [(1, IO_CHUNK_BYTES), (1 + IO_CHUNK_BYTES, IO_CHUNK_BYTES), (1 + 2 * IO_CHUNK_BYTES, 3)]);
    }
}
