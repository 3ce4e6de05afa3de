//! librados: the cluster connection ([`Cluster`]) and pool I/O contexts ([`IoCtx`]), plus the pool-level calls the
//! backend needs (list, create, delete, application tags, usage).
//!
//! Lifetimes are enforced with reference counting rather than borrows: every `IoCtx` and every open image keeps the
//! connection alive, so `rados_shutdown` runs only after the last of them is gone.

use std::ffi::c_char;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use basalt_core::{Error, Result};

use crate::error::{check, from_errno};
use crate::ffi;
use crate::util::{c_string, split_nul_list, string_from_buf};

/// The owner of a `rados_t`; shut down when the last reference goes.
struct ClusterHandle {
    raw: ffi::rados_t,
}

// SAFETY: a connected rados_t is documented thread-safe (librados serialises internally); the handle is only shut
// down in Drop, when no other reference exists.
unsafe impl Send for ClusterHandle {}
// SAFETY: as above, every call through `&ClusterHandle` is a thread-safe librados call.
unsafe impl Sync for ClusterHandle {}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rados_create and nothing uses it after this point (IoCtx and Image hold a
        // reference, so they are gone).
        unsafe { ffi::rados_shutdown(self.raw) };
    }
}

/// A connection to a Ceph cluster. Cheap to clone (shared); shut down when the last clone, [`IoCtx`] and image
/// opened through it are dropped.
#[derive(Clone)]
pub struct Cluster {
    handle: Arc<ClusterHandle>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("instance_id", &self.instance_id()).finish()
    }
}

/// Space use of the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStat {
    /// Raw capacity in KiB.
    pub kb: u64,
    /// Raw KiB in use.
    pub kb_used: u64,
    /// Raw KiB available.
    pub kb_avail: u64,
    /// Objects stored.
    pub num_objects: u64,
}

/// Usage of one pool as librados reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStat {
    /// Bytes stored (logical, before replication).
    pub num_bytes: u64,
    /// Objects stored.
    pub num_objects: u64,
    /// Bytes stored by users (logical).
    pub num_user_bytes: u64,
}

impl Cluster {
    /// Connects as `client.<client_id>` (`admin` for the usual administrator) with the configuration file `conf`
    /// (`None`: Ceph's default search, `$CEPH_CONF` then `/etc/ceph/ceph.conf`...) and `$CEPH_ARGS`, then applies
    /// `options` (`("client_mount_timeout", "30")`...) before connecting. Blocks until the monitors answer or
    /// `client_mount_timeout` (300 s by default) passes.
    pub fn connect(conf: Option<&Path>, client_id: &str, options: &[(&str, &str)]) -> Result<Cluster> {
        let id = c_string(client_id, "client id")?;
        let mut raw: ffi::rados_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer and `id` a NUL-terminated string.
        check(unsafe { ffi::rados_create(&mut raw, id.as_ptr()) }, || format!("creating rados client.{client_id}"))?;
        // From here on the handle is shut down on every path, including errors.
        let cluster = Cluster { handle: Arc::new(ClusterHandle { raw }) };
        let conf_path =
            match conf {
                Some(path) => Some(std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
                    Error::invalid(format!("configuration path {} contains a NUL byte", path.display()))
                })?),
                None => None,
            };
        let conf_ptr = conf_path.as_ref().map_or(ptr::null(), |path| path.as_ptr());
        // SAFETY: the handle is valid; a null path asks for the default search.
        check(unsafe { ffi::rados_conf_read_file(raw, conf_ptr) }, || match conf {
            Some(path) => format!("reading ceph configuration {}", path.display()),
            None => "reading the default ceph configuration".to_owned(),
        })?;
        // CEPH_ARGS, as the ceph tools honour it.
        // SAFETY: valid handle; null selects the CEPH_ARGS variable.
        check(unsafe { ffi::rados_conf_parse_env(raw, ptr::null()) }, || "parsing CEPH_ARGS")?;
        for (name, value) in options {
            let c_name = c_string(name, "option name")?;
            let c_value = c_string(value, "option value")?;
            // SAFETY: valid handle and NUL-terminated strings.
            check(unsafe { ffi::rados_conf_set(raw, c_name.as_ptr(), c_value.as_ptr()) }, || {
                format!("setting ceph option {name}={value}")
            })?;
        }
        // SAFETY: valid, configured, not yet connected handle.
        check(unsafe { ffi::rados_connect(raw) }, || format!("connecting to the ceph cluster as client.{client_id}"))?;
        Ok(cluster)
    }

    pub(crate) fn raw(&self) -> ffi::rados_t {
        self.handle.raw
    }

    /// The raw handle, for librbd/librados calls this wrapper does not cover ([`crate::ffi`]). It stays valid while
    /// `self` lives; do not close or destroy it.
    pub fn as_raw(&self) -> ffi::rados_t {
        self.handle.raw
    }

    /// This client's global id: the `id` the image watchers of this connection carry.
    pub fn instance_id(&self) -> u64 {
        // SAFETY: connected handle.
        unsafe { ffi::rados_get_instance_id(self.raw()) }
    }

    /// The cluster's fsid.
    pub fn fsid(&self) -> Result<String> {
        let mut buf = vec![0u8; 64];
        // SAFETY: the buffer is writable for its length.
        check(unsafe { ffi::rados_cluster_fsid(self.raw(), buf.as_mut_ptr().cast(), buf.len()) }, || "reading fsid")?;
        Ok(string_from_buf(&buf))
    }

    /// Waits until this client has the newest OSD map (after pools were created or removed elsewhere).
    pub fn wait_for_latest_osdmap(&self) -> Result<()> {
        // SAFETY: connected handle.
        check(unsafe { ffi::rados_wait_for_latest_osdmap(self.raw()) }, || "waiting for the latest osdmap")?;
        Ok(())
    }

    /// Space use of the whole cluster.
    pub fn stat(&self) -> Result<ClusterStat> {
        let mut stat = ffi::rados_cluster_stat_t::default();
        // SAFETY: `stat` is a valid out-pointer.
        check(unsafe { ffi::rados_cluster_stat(self.raw(), &mut stat) }, || "reading cluster usage")?;
        Ok(ClusterStat { kb: stat.kb, kb_used: stat.kb_used, kb_avail: stat.kb_avail, num_objects: stat.num_objects })
    }

    /// The names of all pools.
    pub fn pool_list(&self) -> Result<Vec<String>> {
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: the buffer is writable for its length.
            let needed = check(
                unsafe { ffi::rados_pool_list(self.raw(), buf.as_mut_ptr().cast(), buf.len()) },
                || "listing pools",
            )?;
            let needed = usize::try_from(needed).unwrap_or(usize::MAX);
            if needed <= buf.len() {
                return Ok(split_nul_list(&buf[..needed]));
            }
            buf = vec![0u8; needed];
        }
    }

    /// Creates a replicated pool with the cluster's defaults. EEXIST if it exists.
    pub fn pool_create(&self, pool: &str) -> Result<()> {
        let name = c_string(pool, "pool name")?;
        // SAFETY: connected handle, NUL-terminated name.
        check(unsafe { ffi::rados_pool_create(self.raw(), name.as_ptr()) }, || format!("creating pool {pool}"))?;
        Ok(())
    }

    /// Deletes a pool and everything in it (the monitors must allow it: `mon_allow_pool_delete`, else EPERM).
    pub fn pool_delete(&self, pool: &str) -> Result<()> {
        let name = c_string(pool, "pool name")?;
        // SAFETY: connected handle, NUL-terminated name.
        check(unsafe { ffi::rados_pool_delete(self.raw(), name.as_ptr()) }, || format!("deleting pool {pool}"))?;
        Ok(())
    }

    /// The id of a pool (ENOENT if there is none of that name).
    pub fn pool_lookup(&self, pool: &str) -> Result<i64> {
        let name = c_string(pool, "pool name")?;
        // SAFETY: connected handle, NUL-terminated name.
        let id = unsafe { ffi::rados_pool_lookup(self.raw(), name.as_ptr()) };
        if id < 0 {
            return Err(from_errno(i32::try_from(id).unwrap_or(-libc::EIO), format!("looking up pool {pool}")));
        }
        Ok(id)
    }

    /// The name of the pool with id `pool_id` (ENOENT if there is none).
    pub fn pool_name(&self, pool_id: i64) -> Result<String> {
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: the buffer is writable for its length.
            let ret =
                unsafe { ffi::rados_pool_reverse_lookup(self.raw(), pool_id, buf.as_mut_ptr().cast(), buf.len()) };
            if ret == -libc::ERANGE && buf.len() < 1 << 20 {
                buf = vec![0u8; buf.len() * 4];
                continue;
            }
            check(ret, || format!("looking up pool id {pool_id}"))?;
            return Ok(string_from_buf(&buf));
        }
    }

    /// Opens an I/O context on a pool, in its default namespace.
    pub fn ioctx(&self, pool: &str) -> Result<IoCtx> {
        let name = c_string(pool, "pool name")?;
        let mut raw: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, NUL-terminated name, valid out-pointer.
        check(unsafe { ffi::rados_ioctx_create(self.raw(), name.as_ptr(), &mut raw) }, || {
            format!("opening pool {pool}")
        })?;
        Ok(IoCtx { raw, cluster: self.clone() })
    }

    /// Opens an I/O context on a pool by id, in its default namespace.
    pub fn ioctx_by_id(&self, pool_id: i64) -> Result<IoCtx> {
        let mut raw: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, valid out-pointer.
        check(unsafe { ffi::rados_ioctx_create2(self.raw(), pool_id, &mut raw) }, || {
            format!("opening pool id {pool_id}")
        })?;
        Ok(IoCtx { raw, cluster: self.clone() })
    }

    /// Sends a command to the monitors (`{"prefix": "...", ...}` as `ceph` does) and returns its output and status
    /// text. A refusal is an error whose message carries the monitor's explanation.
    pub fn mon_command(&self, command_json: &str) -> Result<(String, String)> {
        self.command(command_json, "monitor", ffi::rados_mon_command)
    }

    /// Sends a command to the active manager (`{"prefix": "rbd trash purge schedule ls", ...}`, as the `rbd` tool
    /// does for its manager-backed commands) and returns its output and status text.
    pub fn mgr_command(&self, command_json: &str) -> Result<(String, String)> {
        self.command(command_json, "manager", ffi::rados_mgr_command)
    }

    fn command(&self, command_json: &str, target: &str, send: CommandFn) -> Result<(String, String)> {
        let command = c_string(command_json, &format!("{target} command"))?;
        let mut commands = [command.as_ptr()];
        let mut out: *mut c_char = ptr::null_mut();
        let mut out_len = 0usize;
        let mut status: *mut c_char = ptr::null_mut();
        let mut status_len = 0usize;
        // SAFETY: one valid command string; the out-pointers are valid; the input buffer is empty.
        let ret = unsafe {
            send(
                self.raw(),
                commands.as_mut_ptr(),
                1,
                ptr::null(),
                0,
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        // SAFETY: librados returns buffers of the given lengths (or null), which we copy then free exactly once.
        let (out_text, status_text) = unsafe {
            let out_text = take_rados_buffer(out, out_len);
            let status_text = take_rados_buffer(status, status_len);
            (out_text, status_text)
        };
        if ret < 0 {
            let context = if status_text.is_empty() {
                format!("{target} command {command_json}")
            } else {
                format!("{target} command {command_json}: {}", status_text.trim())
            };
            return Err(from_errno(ret, context));
        }
        Ok((out_text, status_text))
    }

    /// Removes an application tag from a pool (librados has no call for it; this is the monitor command `ceph osd
    /// pool application disable ... --yes-i-really-mean-it`).
    pub fn pool_application_disable(&self, pool: &str, app: &str) -> Result<()> {
        let command = format!(
            r#"{{"prefix": "osd pool application disable", "pool": {}, "app": {}, "yes_i_really_mean_it": true}}"#,
            json_string(pool),
            json_string(app)
        );
        self.mon_command(&command)?;
        Ok(())
    }
}

/// `rados_mon_command` and `rados_mgr_command` share this signature.
type CommandFn = unsafe extern "C" fn(
    ffi::rados_t,
    *mut *const c_char,
    usize,
    *const c_char,
    usize,
    *mut *mut c_char,
    *mut usize,
    *mut *mut c_char,
    *mut usize,
) -> std::os::raw::c_int;

/// Copies and frees a buffer librados allocated.
///
/// # Safety
///
/// `ptr` must be null or a buffer of `len` bytes from librados that nothing else frees.
unsafe fn take_rados_buffer(ptr: *mut c_char, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes).into_owned();
    // SAFETY: the buffer came from librados and is freed once.
    unsafe { ffi::rados_buffer_free(ptr) };
    text
}

/// A JSON string literal of `text`.
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ch if (ch as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", ch as u32)),
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// An I/O context: one pool and one namespace of it. Destroyed on drop.
///
/// Shared use (`&IoCtx`) from several threads is safe; changing the namespace needs `&mut`.
pub struct IoCtx {
    raw: ffi::rados_ioctx_t,
    cluster: Cluster,
}

// SAFETY: librados I/O contexts may be used from any thread; the only state-changing call (set_namespace) takes
// `&mut self`.
unsafe impl Send for IoCtx {}
// SAFETY: every `&self` method is a thread-safe librados/librbd call on the context.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rados_ioctx_create and is destroyed once; the cluster outlives it (we hold it).
        unsafe { ffi::rados_ioctx_destroy(self.raw) };
    }
}

impl fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoCtx")
            .field("pool_id", &self.pool_id())
            .field("namespace", &self.namespace().unwrap_or_default())
            .finish()
    }
}

impl IoCtx {
    pub(crate) fn raw(&self) -> ffi::rados_ioctx_t {
        self.raw
    }

    /// The raw handle, for librbd/librados calls this wrapper does not cover ([`crate::ffi`]). It stays valid while
    /// `self` lives; do not close or destroy it.
    pub fn as_raw(&self) -> ffi::rados_ioctx_t {
        self.raw
    }

    /// The connection this context belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The pool's id.
    pub fn pool_id(&self) -> i64 {
        // SAFETY: valid context.
        unsafe { ffi::rados_ioctx_get_id(self.raw) }
    }

    /// The pool's name.
    pub fn pool_name(&self) -> Result<String> {
        let mut buf = vec![0u8; 256];
        loop {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            // SAFETY: the buffer is writable for `len` bytes.
            let ret = unsafe { ffi::rados_ioctx_get_pool_name(self.raw, buf.as_mut_ptr().cast(), len) };
            if ret == -libc::ERANGE && buf.len() < 1 << 20 {
                buf = vec![0u8; buf.len() * 4];
                continue;
            }
            check(ret, || "reading the pool name of an io context")?;
            return Ok(string_from_buf(&buf));
        }
    }

    /// The namespace this context works in (empty: the default namespace).
    pub fn namespace(&self) -> Result<String> {
        let mut buf = vec![0u8; 256];
        loop {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            // SAFETY: the buffer is writable for `len` bytes.
            let ret = unsafe { ffi::rados_ioctx_get_namespace(self.raw, buf.as_mut_ptr().cast(), len) };
            if ret == -libc::ERANGE && buf.len() < 1 << 20 {
                buf = vec![0u8; buf.len() * 4];
                continue;
            }
            check(ret, || "reading the namespace of an io context")?;
            return Ok(string_from_buf(&buf));
        }
    }

    /// Switches to namespace `namespace` (`""`: the default namespace). The namespace need not exist for librados;
    /// librbd calls then fail with ENOENT.
    pub fn set_namespace(&mut self, namespace: &str) -> Result<()> {
        let name = c_string(namespace, "namespace")?;
        // SAFETY: valid context, exclusive access, NUL-terminated name (copied by librados).
        unsafe { ffi::rados_ioctx_set_namespace(self.raw, name.as_ptr()) };
        Ok(())
    }

    /// A new context on the same pool and namespace.
    pub fn duplicate(&self) -> Result<IoCtx> {
        let mut copy = self.cluster.ioctx_by_id(self.pool_id())?;
        copy.set_namespace(&self.namespace()?)?;
        Ok(copy)
    }

    /// Tags the pool with an application (`rbd`); `force` allows a second application on the pool.
    pub fn application_enable(&self, app: &str, force: bool) -> Result<()> {
        let name = c_string(app, "application name")?;
        // SAFETY: valid context, NUL-terminated name.
        check(unsafe { ffi::rados_application_enable(self.raw, name.as_ptr(), i32::from(force)) }, || {
            format!("enabling application {app} on pool {}", self.pool_id())
        })?;
        Ok(())
    }

    /// The applications the pool is tagged with.
    pub fn application_list(&self) -> Result<Vec<String>> {
        let mut buf = vec![0u8; 256];
        loop {
            let mut len = buf.len();
            // SAFETY: the buffer is writable for `len` bytes; `len` is updated with the size needed.
            let ret = unsafe { ffi::rados_application_list(self.raw, buf.as_mut_ptr().cast(), &mut len) };
            if ret == -libc::ERANGE && len > buf.len() {
                buf = vec![0u8; len];
                continue;
            }
            check(ret, || format!("listing the applications of pool {}", self.pool_id()))?;
            return Ok(split_nul_list(&buf[..len.min(buf.len())]));
        }
    }

    /// The pool's usage.
    pub fn pool_stat(&self) -> Result<PoolStat> {
        let mut stat = ffi::rados_pool_stat_t::default();
        // SAFETY: valid context and out-pointer.
        check(unsafe { ffi::rados_ioctx_pool_stat(self.raw, &mut stat) }, || {
            format!("reading the usage of pool {}", self.pool_id())
        })?;
        Ok(PoolStat { num_bytes: stat.num_bytes, num_objects: stat.num_objects, num_user_bytes: stat.num_user_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny"), r#""x\u000ay""#);
    }
}
