//! Exports: how an NBD export name maps to an image or snapshot, how exports are listed, described and opened,
//! and how backend refusals become option error replies.
//!
//! Every function here calls the backend synchronously; callers run them on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_core::{
    Backend, Error, ErrorKind, Features, ImageIo, ImageSpec, OpenTarget, PoolNs, SnapName, SnapSpec, default_location,
    parse_spec,
};

use crate::proto;

/// The most exports one `NBD_OPT_LIST` returns; a bound on the reply, far above any pool this product serves.
pub(crate) const MAX_LISTED_EXPORTS: usize = 100_000;

/// An option that cannot be granted: the error reply type and a message for the client's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// An `NBD_REP_ERR_*` value.
    pub reply: u32,
    /// Why, and what to do.
    pub message: String,
}

impl Refusal {
    fn new(reply: u32, message: impl Into<String>) -> Refusal {
        Refusal { reply, message: message.into() }
    }
}

/// A parsed export name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportName {
    /// The image.
    pub image: ImageSpec,
    /// The snapshot, for read-only snapshot exports.
    pub snap: Option<SnapName>,
}

impl ExportName {
    /// Parses `pool[/namespace]/image[@snap]` (a bare image is in pool `rbd`, as in the reference CLI).
    pub fn parse(name: &str) -> Result<ExportName, Refusal> {
        if name.is_empty() {
            return Err(Refusal::new(
                proto::REP_ERR_UNKNOWN,
                "basalt has no default export: name one as pool[/namespace]/image or pool[/namespace]/image@snapshot",
            ));
        }
        let (image, snap) = parse_spec(name).map_err(|err| {
            Refusal::new(
                proto::REP_ERR_UNKNOWN,
                format!("export '{name}' is not pool[/namespace]/image[@snapshot]: {}", err.message()),
            )
        })?;
        Ok(ExportName { image, snap })
    }

    fn target(&self, read_only: bool) -> OpenTarget {
        match &self.snap {
            Some(snap) => OpenTarget::Snapshot(snap.clone()),
            None if read_only => OpenTarget::HeadReadOnly,
            None => OpenTarget::Head,
        }
    }
}

impl std::fmt::Display for ExportName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snap {
            Some(snap) => write!(f, "{}@{snap}", self.image),
            None => write!(f, "{}", self.image),
        }
    }
}

/// What a client learns about an export before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportInfo {
    /// Size in bytes.
    pub size_bytes: u64,
    /// Snapshots are read-only.
    pub read_only: bool,
    /// Several connections may write at once: true unless exclusive-lock limits the image to one writer.
    pub multi_conn: bool,
    /// A description for `NBD_INFO_DESCRIPTION`.
    pub description: String,
}

/// Maps a backend refusal to an option error reply.
fn refusal(export: &ExportName, err: &Error) -> Refusal {
    let reply = match err.kind() {
        ErrorKind::NotFound | ErrorKind::InvalidArgument => proto::REP_ERR_UNKNOWN,
        // A held exclusive lock or a forbidden operation is the server refusing by policy.
        ErrorKind::Busy | ErrorKind::NotPermitted | ErrorKind::ReadOnly => proto::REP_ERR_POLICY,
        // Nothing in the spec fits a storage failure better; the message says what happened.
        _ => proto::REP_ERR_UNKNOWN,
    };
    Refusal::new(reply, format!("cannot export '{export}': {} ({})", err.message(), err.kind().name()))
}

/// Describes an export without opening it, so `NBD_OPT_INFO` and `NBD_OPT_LIST` clients take no lock; a
/// `read_only` client sees the head read-only.
pub(crate) fn describe(backend: &dyn Backend, export: &ExportName, read_only: bool) -> Result<ExportInfo, Refusal> {
    match &export.snap {
        Some(snap) => {
            let spec = SnapSpec { image: export.image.clone(), snap: snap.clone() };
            let info = backend.image_info_at_snap(&spec).map_err(|e| refusal(export, &e))?;
            Ok(ExportInfo {
                size_bytes: info.size_bytes,
                read_only: true,
                multi_conn: true,
                description: format!("basalt snapshot {export} (read-only)"),
            })
        }
        None => {
            let info = backend.image_info(&export.image).map_err(|e| refusal(export, &e))?;
            Ok(ExportInfo {
                size_bytes: info.size_bytes,
                read_only,
                multi_conn: read_only || !info.features.contains(Features::EXCLUSIVE_LOCK),
                description: if read_only {
                    format!("basalt image {export} (read-only for this client)")
                } else {
                    format!("basalt image {export}")
                },
            })
        }
    }
}

/// An open image handle that is never closed on the async runtime: closing flushes, which blocks on the disk.
#[derive(Debug)]
pub(crate) struct ImageHandle(Option<Arc<dyn ImageIo>>);

impl ImageHandle {
    /// Returns the handle, for cloning into workers; workers drop their clones on the blocking pool.
    pub fn io(&self) -> Arc<dyn ImageIo> {
        match &self.0 {
            Some(io) => io.clone(),
            None => unreachable!("the handle is only taken by close, which consumes it"),
        }
    }

    /// Releases this reference on the blocking pool and waits, so a clean disconnect returns after the flush.
    pub async fn close(mut self) {
        if let Some(io) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || drop(io)).await;
        }
    }
}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        // Reached when a connection task is aborted or fails before `close`: hand the release to the blocking
        // pool rather than flushing on a runtime thread.
        if let Some(io) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(io))),
                Err(_) => drop(io),
            }
        }
    }
}

/// An export opened for transmission.
#[derive(Debug)]
pub(crate) struct OpenExport {
    /// The image handle.
    pub handle: ImageHandle,
    /// What the client is told.
    pub info: ExportInfo,
}

/// Pause between attempts to take a busy image.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Opens an export for transmission, registering `client` as a watcher; the head takes the exclusive lock,
/// waiting up to `lock_wait` for a previous holder to let go, unless the client is `read_only`.
pub(crate) fn open(
    backend: &dyn Backend,
    export: &ExportName,
    client: &str,
    lock_wait: Duration,
    read_only: bool,
) -> Result<OpenExport, Refusal> {
    let mut info = describe(backend, export, read_only)?;
    let started = Instant::now();
    let io = loop {
        match backend.open(&export.image, &export.target(read_only), client) {
            Ok(io) => break io,
            Err(err) if err.kind() == ErrorKind::Busy && started.elapsed() < lock_wait => {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            Err(err) => return Err(refusal(export, &err)),
        }
    };
    // The handle is the truth for size and writability; the description was read a moment earlier.
    info.size_bytes = io.size_bytes();
    info.read_only = io.is_read_only();
    if info.read_only {
        info.multi_conn = true;
    }
    Ok(OpenExport { handle: ImageHandle(Some(Arc::from(io))), info })
}

/// Lists every image of every pool and namespace that `visible` lets through, as export names sorted as the backend
/// lists them.
///
/// Pools and namespaces removed while listing are skipped.
pub(crate) fn list(backend: &dyn Backend, visible: impl Fn(&ImageSpec) -> bool) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for pool in backend.pool_list()? {
        let mut locations = vec![default_location(&pool.name)];
        match backend.namespace_list(&pool.name) {
            Ok(namespaces) => locations.extend(
                namespaces
                    .into_iter()
                    .filter(|ns| !ns.name.is_default())
                    .map(|ns| PoolNs::new(pool.name.clone(), ns.name)),
            ),
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        }
        for location in locations {
            let images = match backend.image_list(&location) {
                Ok(images) => images,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            for image in images {
                if names.len() >= MAX_LISTED_EXPORTS {
                    tracing::warn!(limit = MAX_LISTED_EXPORTS, "export list truncated");
                    return Ok(names);
                }
                let spec = ImageSpec::new(location.pool.clone(), location.namespace.clone(), image.name);
                if visible(&spec) {
                    names.push(spec.to_string());
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_parse_like_image_specs() {
        let head = ExportName::parse("rbd/img").expect("head");
        assert_eq!(head.snap, None);
        assert_eq!(head.to_string(), "rbd/img");
        assert_eq!(head.target(false), OpenTarget::Head);
        assert_eq!(head.target(true), OpenTarget::HeadReadOnly);
        let snap = ExportName::parse("p/ns/img@s1").expect("snapshot");
        assert_eq!(snap.to_string(), "p/ns/img@s1");
        assert!(matches!(snap.target(false), OpenTarget::Snapshot(s) if s.as_str() == "s1"));
        assert_eq!(ExportName::parse("img").expect("bare image").to_string(), "rbd/img");
    }

    #[test]
    fn bad_export_names_are_unknown_exports_with_a_message() {
        for bad in ["", "a/b/c/d", "p//img", "img@", "p/img@.x"] {
            let refusal = ExportName::parse(bad).expect_err(bad);
            assert_eq!(refusal.reply, proto::REP_ERR_UNKNOWN, "{bad}");
            assert!(refusal.message.contains("pool[/namespace]/image"), "{bad}: {}", refusal.message);
        }
    }

    #[test]
    fn backend_refusals_map_to_option_errors() {
        let export = ExportName::parse("rbd/img").expect("name");
        let busy = refusal(&export, &Error::busy("image is locked by another client (1.2.3.4:5)"));
        assert_eq!(busy.reply, proto::REP_ERR_POLICY);
        assert!(busy.message.contains("locked") && busy.message.contains("EBUSY"), "{}", busy.message);
        assert_eq!(refusal(&export, &Error::not_found("no such image")).reply, proto::REP_ERR_UNKNOWN);
        assert_eq!(refusal(&export, &Error::io("disk")).reply, proto::REP_ERR_UNKNOWN);
    }
}
