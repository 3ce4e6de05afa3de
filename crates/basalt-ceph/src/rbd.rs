//! librbd calls that work on a pool and namespace (an [`IoCtx`]) rather than an open image: image create, list,
//! rename, remove and clone; the trash; namespaces; pool metadata and configuration; plus the records they return
//! and [`ImageOptions`], the Rust form of `rbd_image_options_t`.

use std::ffi::c_int;
use std::ptr;

use basalt_core::{Error, Result, Timestamp};

use crate::error::check;
use crate::ffi;
use crate::progress::{ProgressContext, ProgressFn, progress_trampoline};
use crate::rados::IoCtx;
use crate::util::{c_string, split_nul_exact, split_nul_list, string_from_ptr, timestamp};

/// The largest list the wrappers grow a buffer to; a bound on memory if librbd kept asking for more.
const LIST_ENTRIES_MAX: usize = 1 << 22;

/// Options for creating, copying or cloning an image (`rbd_image_options_t`); unset fields take librbd's and the
/// cluster's defaults (`rbd_default_features`, order 22...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Image format: 2 (1 is long deprecated).
    pub format: Option<u64>,
    /// The full feature bits (`RBD_FEATURE_*`).
    pub features: Option<u64>,
    /// Feature bits added to the defaults (when `features` is unset).
    pub features_set: Option<u64>,
    /// Feature bits removed from the defaults (when `features` is unset).
    pub features_clear: Option<u64>,
    /// Object size as a power of two (12..=25).
    pub order: Option<u8>,
    /// Stripe unit in bytes; set together with `stripe_count`.
    pub stripe_unit: Option<u64>,
    /// Stripe count; set together with `stripe_unit`.
    pub stripe_count: Option<u64>,
    /// A separate pool for the data objects.
    pub data_pool: Option<String>,
    /// Copy and deep copy: flatten the destination instead of keeping the source's parent.
    pub flatten: Option<bool>,
    /// Clone format: 1 (needs a protected snapshot) or 2 (`rbd_default_clone_format` decides when unset).
    pub clone_format: Option<u64>,
}

/// An `rbd_image_options_t`, destroyed on drop.
pub(crate) struct RawImageOptions {
    raw: ffi::rbd_image_options_t,
}

impl Drop for RawImageOptions {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rbd_image_options_create and is destroyed once.
        unsafe { ffi::rbd_image_options_destroy(self.raw) };
    }
}

impl RawImageOptions {
    pub(crate) fn raw(&self) -> ffi::rbd_image_options_t {
        self.raw
    }

    fn set_u64(&mut self, option: u32, value: u64, what: &str) -> Result<()> {
        let option = c_int::try_from(option).map_err(|_| Error::invalid(format!("bad image option {what}")))?;
        // SAFETY: valid options handle.
        check(unsafe { ffi::rbd_image_options_set_uint64(self.raw, option, value) }, || {
            format!("setting image option {what}={value}")
        })?;
        Ok(())
    }

    fn set_str(&mut self, option: u32, value: &str, what: &str) -> Result<()> {
        let option = c_int::try_from(option).map_err(|_| Error::invalid(format!("bad image option {what}")))?;
        let c_value = c_string(value, what)?;
        // SAFETY: valid options handle and NUL-terminated string (copied by librbd).
        check(unsafe { ffi::rbd_image_options_set_string(self.raw, option, c_value.as_ptr()) }, || {
            format!("setting image option {what}={value}")
        })?;
        Ok(())
    }
}

impl ImageOptions {
    /// The librbd form of these options.
    pub(crate) fn to_raw(&self) -> Result<RawImageOptions> {
        let mut raw: ffi::rbd_image_options_t = ptr::null_mut();
        // SAFETY: valid out-pointer; the handle is owned by RawImageOptions from here on.
        unsafe { ffi::rbd_image_options_create(&mut raw) };
        let mut options = RawImageOptions { raw };
        let u64_options = [
            (ffi::RBD_IMAGE_OPTION_FORMAT, self.format, "format"),
            (ffi::RBD_IMAGE_OPTION_FEATURES, self.features, "features"),
            (ffi::RBD_IMAGE_OPTION_FEATURES_SET, self.features_set, "features_set"),
            (ffi::RBD_IMAGE_OPTION_FEATURES_CLEAR, self.features_clear, "features_clear"),
            (ffi::RBD_IMAGE_OPTION_ORDER, self.order.map(u64::from), "order"),
            (ffi::RBD_IMAGE_OPTION_STRIPE_UNIT, self.stripe_unit, "stripe_unit"),
            (ffi::RBD_IMAGE_OPTION_STRIPE_COUNT, self.stripe_count, "stripe_count"),
            (ffi::RBD_IMAGE_OPTION_FLATTEN, self.flatten.map(u64::from), "flatten"),
            (ffi::RBD_IMAGE_OPTION_CLONE_FORMAT, self.clone_format, "clone_format"),
        ];
        for (option, value, what) in u64_options {
            if let Some(value) = value {
                options.set_u64(option, value, what)?;
            }
        }
        if let Some(pool) = &self.data_pool {
            options.set_str(ffi::RBD_IMAGE_OPTION_DATA_POOL, pool, "data_pool")?;
        }
        Ok(options)
    }
}

/// An image of a pool's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The image id (`rbd_data.<id>` objects).
    pub id: String,
    /// The image name.
    pub name: String,
}

/// Why an image is in the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrashSource {
    /// Moved there by a user.
    User,
    /// Moved there by mirroring.
    Mirroring,
    /// Moved there by a migration.
    Migration,
    /// Half removed.
    Removing,
    /// Moved there as the parent of a removed clone (`rbd_move_parent_to_trash_on_remove`).
    UserParent,
    /// A value this version does not know.
    Unknown(u32),
}

impl TrashSource {
    fn from_raw(source: ffi::rbd_trash_image_source_t) -> TrashSource {
        match source {
            ffi::RBD_TRASH_IMAGE_SOURCE_USER => TrashSource::User,
            ffi::RBD_TRASH_IMAGE_SOURCE_MIRRORING => TrashSource::Mirroring,
            ffi::RBD_TRASH_IMAGE_SOURCE_MIGRATION => TrashSource::Migration,
            ffi::RBD_TRASH_IMAGE_SOURCE_REMOVING => TrashSource::Removing,
            ffi::RBD_TRASH_IMAGE_SOURCE_USER_PARENT => TrashSource::UserParent,
            other => TrashSource::Unknown(other),
        }
    }
}

/// A trash entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashInfo {
    /// The image id (what restore and remove take).
    pub id: String,
    /// The image's name when it was moved.
    pub name: String,
    /// Why it is there.
    pub source: TrashSource,
    /// When it was moved.
    pub deletion_time: Timestamp,
    /// Before this time, removal needs `force` (EPERM otherwise).
    pub deferment_end_time: Timestamp,
}

impl TrashInfo {
    /// # Safety
    ///
    /// `raw` must be an entry librbd filled (its strings valid).
    unsafe fn from_raw(raw: &ffi::rbd_trash_image_info_t) -> TrashInfo {
        TrashInfo {
            // SAFETY: librbd filled the strings (guaranteed by the caller).
            id: unsafe { string_from_ptr(raw.id) },
            // SAFETY: as above.
            name: unsafe { string_from_ptr(raw.name) },
            source: TrashSource::from_raw(raw.source),
            deletion_time: timestamp(raw.deletion_time),
            deferment_end_time: timestamp(raw.deferment_end_time),
        }
    }
}

/// Where a configuration value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The client's configuration (files, monitors' config database, defaults).
    Config,
    /// A pool override (`conf_` pool metadata).
    Pool,
    /// An image override (`conf_` image metadata).
    Image,
    /// A value this version does not know.
    Unknown(u32),
}

impl ConfigSource {
    fn from_raw(source: ffi::rbd_config_source_t) -> ConfigSource {
        match source {
            ffi::RBD_CONFIG_SOURCE_CONFIG => ConfigSource::Config,
            ffi::RBD_CONFIG_SOURCE_POOL => ConfigSource::Pool,
            ffi::RBD_CONFIG_SOURCE_IMAGE => ConfigSource::Image,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One `rbd_*` option with its effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOption {
    /// The option name (`rbd_qos_iops_limit`).
    pub name: String,
    /// The effective value.
    pub value: String,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// Copies a librbd configuration list and frees it with `cleanup`.
///
/// # Safety
///
/// The first `count` entries of `options` must have been filled by librbd.
pub(crate) unsafe fn config_options_from_raw(options: &[ffi::rbd_config_option_t]) -> Vec<ConfigOption> {
    options
        .iter()
        .map(|option| ConfigOption {
            // SAFETY: filled by librbd (guaranteed by the caller).
            name: unsafe { string_from_ptr(option.name) },
            // SAFETY: as above.
            value: unsafe { string_from_ptr(option.value) },
            source: ConfigSource::from_raw(option.source),
        })
        .collect()
}

/// librbd's image and trash counts of a pool (`rbd pool stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RbdPoolStats {
    /// Images in the directory.
    pub images: u64,
    /// Bytes provisioned by those images (head only).
    pub image_provisioned_bytes: u64,
    /// Bytes provisioned by the images and their snapshots.
    pub image_max_provisioned_bytes: u64,
    /// Snapshots of those images.
    pub image_snapshots: u64,
    /// Images in the trash.
    pub trash_images: u64,
    /// Bytes provisioned by trashed images.
    pub trash_provisioned_bytes: u64,
    /// Bytes provisioned by trashed images and their snapshots.
    pub trash_max_provisioned_bytes: u64,
    /// Snapshots of trashed images.
    pub trash_snapshots: u64,
}

/// Calls a librbd list function that fills an array of `T` and, when the array is too short, stores the length it
/// needs in its count argument and fails with ERANGE. Returns the array and the number of entries filled.
pub(crate) fn fill_list<T: Default + Clone, N: Copy + TryFrom<usize> + TryInto<usize>>(
    initial: usize,
    mut call: impl FnMut(*mut T, &mut N) -> c_int,
    context: impl Fn() -> String,
) -> Result<(Vec<T>, usize)> {
    let mut capacity = initial.max(1);
    loop {
        let mut entries = vec![T::default(); capacity];
        let mut count = N::try_from(capacity).map_err(|_| Error::io(format!("{}: list too long", context())))?;
        let ret = call(entries.as_mut_ptr(), &mut count);
        let count: usize = count.try_into().unwrap_or(0);
        if ret == -libc::ERANGE && count > capacity && count <= LIST_ENTRIES_MAX {
            capacity = count;
            continue;
        }
        check(ret, &context)?;
        return Ok((entries, count.min(capacity)));
    }
}

/// Calls a librbd function that fills parallel `keys` and `values` buffers of NUL-terminated strings (metadata
/// lists), growing them on ERANGE.
pub(crate) fn fill_key_values(
    mut call: impl FnMut(*mut std::ffi::c_char, &mut usize, *mut std::ffi::c_char, &mut usize) -> c_int,
    context: impl Fn() -> String,
) -> Result<Vec<(String, String)>> {
    let (mut keys_capacity, mut values_capacity) = (4096usize, 4096usize);
    loop {
        let mut keys = vec![0u8; keys_capacity];
        let mut values = vec![0u8; values_capacity];
        let (mut keys_len, mut values_len) = (keys_capacity, values_capacity);
        let ret = call(keys.as_mut_ptr().cast(), &mut keys_len, values.as_mut_ptr().cast(), &mut values_len);
        if ret == -libc::ERANGE
            && (keys_len > keys_capacity || values_len > values_capacity)
            && keys_len.max(values_len) <= LIST_ENTRIES_MAX * 64
        {
            keys_capacity = keys_len.max(keys_capacity);
            values_capacity = values_len.max(values_capacity);
            continue;
        }
        check(ret, &context)?;
        let names = split_nul_list(&keys[..keys_len.min(keys_capacity)]);
        let texts = split_nul_exact(&values[..values_len.min(values_capacity)], names.len());
        if texts.len() != names.len() {
            return Err(Error::io(format!(
                "{}: librbd returned {} keys but {} values",
                context(),
                names.len(),
                texts.len()
            )));
        }
        return Ok(names.into_iter().zip(texts).collect());
    }
}

/// Calls a librbd getter that writes one NUL-terminated string into a buffer and reports the size it needs through
/// `len` with ERANGE.
pub(crate) fn fill_string(
    mut call: impl FnMut(*mut std::ffi::c_char, &mut usize) -> c_int,
    context: impl Fn() -> String,
) -> Result<String> {
    let mut capacity = 256usize;
    loop {
        let mut buf = vec![0u8; capacity];
        let mut len = capacity;
        let ret = call(buf.as_mut_ptr().cast(), &mut len);
        if ret == -libc::ERANGE && len > capacity && len <= LIST_ENTRIES_MAX * 64 {
            capacity = len;
            continue;
        }
        check(ret, &context)?;
        return Ok(crate::util::string_from_buf(&buf));
    }
}

/// Runs a librbd call that takes a progress callback, with `progress` behind it.
pub(crate) fn with_progress<C: std::fmt::Display>(
    progress: &mut ProgressFn<'_>,
    call: impl FnOnce(ffi::librbd_progress_fn_t, *mut std::ffi::c_void) -> c_int,
    context: impl FnOnce() -> C,
) -> Result<()> {
    let context_state = ProgressContext::new(progress);
    let ret = call(Some(progress_trampoline), context_state.as_arg());
    context_state.finish(ret, context)
}

impl IoCtx {
    /// A label `pool[/namespace]` for messages.
    pub(crate) fn label(&self) -> String {
        let pool = self.pool_name().unwrap_or_else(|_| format!("pool#{}", self.pool_id()));
        match self.namespace() {
            Ok(namespace) if !namespace.is_empty() => format!("{pool}/{namespace}"),
            _ => pool,
        }
    }

    /// Initialises the pool for rbd (`rbd pool init`); `force` also for pools tagged with another application.
    pub fn rbd_pool_init(&self, force: bool) -> Result<()> {
        // SAFETY: valid context.
        check(unsafe { ffi::rbd_pool_init(self.raw(), force) }, || {
            format!("initialising pool {} for rbd", self.label())
        })?;
        Ok(())
    }

    /// librbd's counts of images, snapshots and trash entries of this pool and namespace.
    pub fn rbd_pool_stats(&self) -> Result<RbdPoolStats> {
        let mut stats = RbdPoolStats::default();
        let mut raw: ffi::rbd_pool_stats_t = ptr::null_mut();
        // SAFETY: valid out-pointer.
        unsafe { ffi::rbd_pool_stats_create(&mut raw) };
        let result = (|| {
            let fields: [(u32, &mut u64); 8] = [
                (ffi::RBD_POOL_STAT_OPTION_IMAGES, &mut stats.images),
                (ffi::RBD_POOL_STAT_OPTION_IMAGE_PROVISIONED_BYTES, &mut stats.image_provisioned_bytes),
                (ffi::RBD_POOL_STAT_OPTION_IMAGE_MAX_PROVISIONED_BYTES, &mut stats.image_max_provisioned_bytes),
                (ffi::RBD_POOL_STAT_OPTION_IMAGE_SNAPSHOTS, &mut stats.image_snapshots),
                (ffi::RBD_POOL_STAT_OPTION_TRASH_IMAGES, &mut stats.trash_images),
                (ffi::RBD_POOL_STAT_OPTION_TRASH_PROVISIONED_BYTES, &mut stats.trash_provisioned_bytes),
                (ffi::RBD_POOL_STAT_OPTION_TRASH_MAX_PROVISIONED_BYTES, &mut stats.trash_max_provisioned_bytes),
                (ffi::RBD_POOL_STAT_OPTION_TRASH_SNAPSHOTS, &mut stats.trash_snapshots),
            ];
            for (option, field) in fields {
                let option = c_int::try_from(option).map_err(|_| Error::invalid("bad pool stat option"))?;
                // SAFETY: valid stats handle; `field` stays valid until rbd_pool_stats_get below returns (it borrows
                // `stats`, which outlives this closure).
                let ret = unsafe { ffi::rbd_pool_stats_option_add_uint64(raw, option, field) };
                check(ret, || "preparing rbd pool stats")?;
            }
            // SAFETY: valid context and stats handle whose registered pointers are all alive.
            check(unsafe { ffi::rbd_pool_stats_get(self.raw(), raw) }, || {
                format!("reading rbd stats of {}", self.label())
            })?;
            Ok(())
        })();
        // SAFETY: `raw` came from rbd_pool_stats_create and is destroyed once.
        unsafe { ffi::rbd_pool_stats_destroy(raw) };
        result.map(|()| stats)
    }

    // --- namespaces ---

    /// Creates an rbd namespace in this pool (EEXIST if it exists).
    pub fn namespace_create(&self, namespace: &str) -> Result<()> {
        let name = c_string(namespace, "namespace")?;
        // SAFETY: valid context, NUL-terminated name.
        check(unsafe { ffi::rbd_namespace_create(self.raw(), name.as_ptr()) }, || {
            format!("creating namespace {namespace} in {}", self.label())
        })?;
        Ok(())
    }

    /// Removes an rbd namespace (EBUSY while it holds images or trash entries, ENOENT if missing).
    pub fn namespace_remove(&self, namespace: &str) -> Result<()> {
        let name = c_string(namespace, "namespace")?;
        // SAFETY: valid context, NUL-terminated name.
        check(unsafe { ffi::rbd_namespace_remove(self.raw(), name.as_ptr()) }, || {
            format!("removing namespace {namespace} of {}", self.label())
        })?;
        Ok(())
    }

    /// The rbd namespaces of this pool.
    pub fn namespace_list(&self) -> Result<Vec<String>> {
        let mut capacity = 1024usize;
        loop {
            let mut buf = vec![0u8; capacity];
            let mut len = capacity;
            // SAFETY: the buffer is writable for `len` bytes; `len` is updated.
            let ret = unsafe { ffi::rbd_namespace_list(self.raw(), buf.as_mut_ptr().cast(), &mut len) };
            if ret == -libc::ERANGE && len > capacity && len <= LIST_ENTRIES_MAX * 64 {
                capacity = len;
                continue;
            }
            check(ret, || format!("listing namespaces of {}", self.label()))?;
            return Ok(split_nul_list(&buf[..len.min(capacity)]));
        }
    }

    /// Whether an rbd namespace exists in this pool.
    pub fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        let name = c_string(namespace, "namespace")?;
        let mut exists = false;
        // SAFETY: valid context, NUL-terminated name, valid out-pointer.
        check(unsafe { ffi::rbd_namespace_exists(self.raw(), name.as_ptr(), &mut exists) }, || {
            format!("looking up namespace {namespace} in {}", self.label())
        })?;
        Ok(exists)
    }

    // --- images ---

    /// Creates an image of `size_bytes` (rbd_create4).
    pub fn image_create(&self, name: &str, size_bytes: u64, options: &ImageOptions) -> Result<()> {
        let c_name = c_string(name, "image name")?;
        let raw_options = options.to_raw()?;
        // SAFETY: valid context, NUL-terminated name, valid options handle.
        check(unsafe { ffi::rbd_create4(self.raw(), c_name.as_ptr(), size_bytes, raw_options.raw()) }, || {
            format!("creating image {}/{name}", self.label())
        })?;
        Ok(())
    }

    /// The images of this pool and namespace (trash excluded), in librbd's order.
    pub fn image_list(&self) -> Result<Vec<ImageEntry>> {
        let (entries, count) = fill_list::<ffi::rbd_image_spec_t, usize>(
            64,
            // SAFETY: the array holds `*count` entries; librbd fills at most that many.
            |array, count| unsafe { ffi::rbd_list2(self.raw(), array, count) },
            || format!("listing images of {}", self.label()),
        )?;
        let images = entries[..count]
            .iter()
            .map(|entry| ImageEntry {
                // SAFETY: librbd filled the first `count` entries.
                id: unsafe { string_from_ptr(entry.id) },
                // SAFETY: as above.
                name: unsafe { string_from_ptr(entry.name) },
            })
            .collect();
        let mut entries = entries;
        // SAFETY: frees the strings of the `count` filled entries, once.
        unsafe { ffi::rbd_image_spec_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(images)
    }

    /// Removes an image (ENOTEMPTY with snapshots, EBUSY with watchers...).
    pub fn image_remove(&self, name: &str, progress: &mut ProgressFn<'_>) -> Result<()> {
        let c_name = c_string(name, "image name")?;
        with_progress(
            progress,
            // SAFETY: valid context and name; the callback data outlives the call.
            |callback, data| unsafe { ffi::rbd_remove_with_progress(self.raw(), c_name.as_ptr(), callback, data) },
            || format!("removing image {}/{name}", self.label()),
        )
    }

    /// Renames an image within this pool and namespace.
    pub fn image_rename(&self, name: &str, new_name: &str) -> Result<()> {
        let c_name = c_string(name, "image name")?;
        let c_new_name = c_string(new_name, "image name")?;
        // SAFETY: valid context and names.
        check(unsafe { ffi::rbd_rename(self.raw(), c_name.as_ptr(), c_new_name.as_ptr()) }, || {
            format!("renaming image {}/{name} to {new_name}", self.label())
        })?;
        Ok(())
    }

    /// Clones snapshot `snap` of image `parent` (in this context) into `child_name` in `child_io` (rbd_clone3).
    pub fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        child_io: &IoCtx,
        child_name: &str,
        options: &ImageOptions,
    ) -> Result<()> {
        let c_parent = c_string(parent, "image name")?;
        let c_snap = c_string(snap, "snapshot name")?;
        let c_child = c_string(child_name, "image name")?;
        let raw_options = options.to_raw()?;
        // SAFETY: valid contexts, names and options handle.
        let ret = unsafe {
            ffi::rbd_clone3(
                self.raw(),
                c_parent.as_ptr(),
                c_snap.as_ptr(),
                child_io.raw(),
                c_child.as_ptr(),
                raw_options.raw(),
            )
        };
        check(ret, || format!("cloning {}/{parent}@{snap} to {}/{child_name}", self.label(), child_io.label()))?;
        Ok(())
    }

    // --- trash ---

    /// Moves an image to the trash; it may be removed without force `delay_secs` seconds from now. Returns nothing:
    /// find the entry with [`IoCtx::trash_list`] (librbd's C call does not return the id).
    pub fn trash_move(&self, name: &str, delay_secs: u64) -> Result<()> {
        let c_name = c_string(name, "image name")?;
        // SAFETY: valid context and name.
        check(unsafe { ffi::rbd_trash_move(self.raw(), c_name.as_ptr(), delay_secs) }, || {
            format!("moving image {}/{name} to the trash", self.label())
        })?;
        Ok(())
    }

    /// One trash entry by image id (ENOENT if none).
    pub fn trash_get(&self, id: &str) -> Result<TrashInfo> {
        let c_id = c_string(id, "image id")?;
        let mut raw = ffi::rbd_trash_image_info_t::default();
        // SAFETY: valid context, id and out-pointer.
        check(unsafe { ffi::rbd_trash_get(self.raw(), c_id.as_ptr(), &mut raw) }, || {
            format!("reading trash entry {id} of {}", self.label())
        })?;
        // SAFETY: librbd filled `raw`.
        let info = unsafe { TrashInfo::from_raw(&raw) };
        // SAFETY: frees the strings of the filled entry, once.
        unsafe { ffi::rbd_trash_get_cleanup(&mut raw) };
        Ok(info)
    }

    /// The trash entries of this pool and namespace.
    pub fn trash_list(&self) -> Result<Vec<TrashInfo>> {
        let (mut entries, count) = fill_list::<ffi::rbd_trash_image_info_t, usize>(
            32,
            // SAFETY: the array holds `*count` entries.
            |array, count| unsafe { ffi::rbd_trash_list(self.raw(), array, count) },
            || format!("listing the trash of {}", self.label()),
        )?;
        // SAFETY: librbd filled the first `count` entries.
        let infos = entries[..count].iter().map(|entry| unsafe { TrashInfo::from_raw(entry) }).collect();
        // SAFETY: frees the strings of the `count` filled entries, once.
        unsafe { ffi::rbd_trash_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(infos)
    }

    /// Restores a trash entry as `name` (EEXIST if the name is taken).
    pub fn trash_restore(&self, id: &str, name: &str) -> Result<()> {
        let c_id = c_string(id, "image id")?;
        let c_name = c_string(name, "image name")?;
        // SAFETY: valid context, id and name.
        check(unsafe { ffi::rbd_trash_restore(self.raw(), c_id.as_ptr(), c_name.as_ptr()) }, || {
            format!("restoring trash entry {id} of {} as {name}", self.label())
        })?;
        Ok(())
    }

    /// Removes a trash entry; before its deferment end only with `force` (EPERM otherwise).
    pub fn trash_remove(&self, id: &str, force: bool, progress: &mut ProgressFn<'_>) -> Result<()> {
        let c_id = c_string(id, "image id")?;
        with_progress(
            progress,
            // SAFETY: valid context and id; the callback data outlives the call.
            |callback, data| unsafe {
                ffi::rbd_trash_remove_with_progress(self.raw(), c_id.as_ptr(), force, callback, data)
            },
            || format!("removing trash entry {id} of {}", self.label()),
        )
    }

    /// Removes the trash entries whose deferment ended before `expire_before` (Unix seconds); with `threshold` in
    /// 0..=1, only while the pool is fuller than that fraction (librbd's semantics; pass -1.0 to ignore usage).
    pub fn trash_purge(&self, expire_before: i64, threshold: f32, progress: &mut ProgressFn<'_>) -> Result<()> {
        with_progress(
            progress,
            // SAFETY: valid context; the callback data outlives the call.
            |callback, data| unsafe {
                ffi::rbd_trash_purge_with_progress(self.raw(), expire_before, threshold, callback, data)
            },
            || format!("purging the trash of {}", self.label()),
        )
    }

    // --- pool metadata and configuration ---

    /// One pool metadata value (ENOENT if the key is absent).
    pub fn pool_metadata_get(&self, key: &str) -> Result<String> {
        let c_key = c_string(key, "metadata key")?;
        fill_string(
            // SAFETY: the buffer is writable for `*len` bytes.
            |buf, len| unsafe { ffi::rbd_pool_metadata_get(self.raw(), c_key.as_ptr(), buf, len) },
            || format!("reading pool metadata {key} of {}", self.label()),
        )
    }

    /// Sets one pool metadata value (`conf_<option>` keys are pool configuration overrides).
    pub fn pool_metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let c_key = c_string(key, "metadata key")?;
        let c_value = c_string(value, "metadata value")?;
        // SAFETY: valid context and strings.
        check(unsafe { ffi::rbd_pool_metadata_set(self.raw(), c_key.as_ptr(), c_value.as_ptr()) }, || {
            format!("setting pool metadata {key} of {}", self.label())
        })?;
        Ok(())
    }

    /// Removes one pool metadata key (ENOENT if absent).
    pub fn pool_metadata_remove(&self, key: &str) -> Result<()> {
        let c_key = c_string(key, "metadata key")?;
        // SAFETY: valid context and key.
        check(unsafe { ffi::rbd_pool_metadata_remove(self.raw(), c_key.as_ptr()) }, || {
            format!("removing pool metadata {key} of {}", self.label())
        })?;
        Ok(())
    }

    /// All pool metadata, sorted by key.
    pub fn pool_metadata_list(&self) -> Result<Vec<(String, String)>> {
        fill_key_values(
            // SAFETY: both buffers are writable for their lengths; start key "" (librbd 16 throws a C++ exception through
            // the C call, aborting the process, for a null start key), no limit.
            |keys, keys_len, values, values_len| unsafe {
                ffi::rbd_pool_metadata_list(self.raw(), c"".as_ptr(), 0, keys, keys_len, values, values_len)
            },
            || format!("listing pool metadata of {}", self.label()),
        )
    }

    /// Every `rbd_*` option's effective value for this pool, with its source.
    pub fn config_pool_list(&self) -> Result<Vec<ConfigOption>> {
        let (mut entries, count) = fill_list::<ffi::rbd_config_option_t, c_int>(
            256,
            // SAFETY: the array holds `*count` entries.
            |array, count| unsafe { ffi::rbd_config_pool_list(self.raw(), array, count) },
            || format!("listing the rbd configuration of {}", self.label()),
        )?;
        // SAFETY: librbd filled the first `count` entries.
        let options = unsafe { config_options_from_raw(&entries[..count]) };
        let count = c_int::try_from(count).unwrap_or(c_int::MAX);
        // SAFETY: frees the `count` filled entries, once.
        unsafe { ffi::rbd_config_pool_list_cleanup(entries.as_mut_ptr(), count) };
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_list_grows_on_erange() {
        let mut calls = 0;
        let (entries, count) = fill_list::<u32, usize>(
            2,
            |array, count| {
                calls += 1;
                if *count < 5 {
                    *count = 5;
                    return -libc::ERANGE;
                }
                for index in 0..5 {
                    // SAFETY: the array holds at least 5 entries here.
                    unsafe { *array.add(index) = u32::try_from(index).unwrap_or(0) * 10 };
                }
                *count = 5;
                0
            },
            || "test".to_owned(),
        )
        .expect("list");
        assert_eq!(calls, 2);
        assert_eq!(&entries[..count], [0, 10, 20, 30, 40]);
    }

    #[test]
    fn fill_list_reports_other_errors() {
        let result = fill_list::<u32, c_int>(4, |_, _| -libc::ENOENT, || "listing x".to_owned());
        assert_eq!(result.map_err(|e| e.kind()), Err(basalt_core::ErrorKind::NotFound));
    }

    #[test]
    fn image_options_convert() {
        let options = ImageOptions {
            order: Some(22),
            features: Some(u64::from(ffi::RBD_FEATURE_LAYERING)),
            data_pool: Some("data".to_owned()),
            ..ImageOptions::default()
        };
        let raw = options.to_raw().expect("options");
        let mut order = 0u64;
        // SAFETY: valid handle and out-pointer.
        let ret =
            unsafe { ffi::rbd_image_options_get_uint64(raw.raw(), ffi::RBD_IMAGE_OPTION_ORDER as c_int, &mut order) };
        assert_eq!((ret, order), (0, 22));
    }
}
