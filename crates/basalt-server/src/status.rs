//! An image's status as the dashboard, the CLI and `/metrics` show it: OK, degraded or migrating, with the reason.
//!
//! It is derived from what the server knows, not stored:
//! - **degraded**: the store stopped (after a call failed with EIO, the backend said it refuses changes after a
//!   failed sync, `Backend::stopped`); the image's data path met I/O errors and no operation has succeeded since
//!   (opening it included); its parent image or snapshot cannot be found; its metadata cannot be read; or the
//!   backend itself reports it degraded (the embedded engine's checksum errors, Ceph's invalid object map), with
//!   the backend's reason;
//! - **migrating**: a long task (flatten, copy, deep copy, rollback, snapshot purge, removal) works on it;
//! - otherwise **OK**.
//!
//! Degraded wins over migrating. What needs the backend (the parent check) is done when an image is read for the API;
//! its outcome is kept so `/metrics` can show it without scanning the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use basalt_core::{Backend, ImageInfo, ImageSpec, ImageStatus, PoolNs};
use serde_json::Value;

use crate::datapath::Registry;
use crate::tasks::TaskInfo;

/// The status of one image and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// OK, degraded or migrating.
    pub status: ImageStatus,
    /// Why it is not OK (every reason, `; `-separated); none when OK.
    pub detail: Option<String>,
}

impl Status {
    fn from_reasons(degraded: Vec<String>, busy: Vec<String>) -> Status {
        if !degraded.is_empty() {
            Status { status: ImageStatus::Degraded, detail: Some(degraded.join("; ")) }
        } else if !busy.is_empty() {
            Status { status: ImageStatus::Migrating, detail: Some(busy.join("; ")) }
        } else {
            Status { status: ImageStatus::Ok, detail: None }
        }
    }
}

/// Reasons found by reading the image (parent, metadata, backend flags), kept per `pool[/ns]/image` for `/metrics`.
#[derive(Debug, Default)]
pub struct Found {
    by_image: Mutex<HashMap<String, Option<String>>>,
}

impl Found {
    fn set(&self, key: String, reason: Option<String>) {
        let mut map = self.by_image.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match reason {
            Some(r) => {
                map.insert(key, Some(r));
            }
            // Only images once found degraded stay listed (as OK now): the map does not grow with healthy images.
            None => {
                if let Some(entry) = map.get_mut(&key) {
                    *entry = None;
                }
            }
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.by_image.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned().flatten()
    }

    fn keys(&self) -> Vec<String> {
        self.by_image.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }
}

/// What status derivation reads: the data-path registry and the tasks running when the request began.
#[derive(Debug, Clone)]
pub struct StatusCtx {
    registry: Arc<Registry>,
    running: Vec<TaskInfo>,
}

impl StatusCtx {
    /// A context over the registry and the currently running tasks.
    pub fn new(registry: Arc<Registry>, running: Vec<TaskInfo>) -> StatusCtx {
        StatusCtx { registry, running }
    }

    /// The reasons that need no backend call: the store, the data path, running tasks.
    fn quick(&self, key: &str) -> (Vec<String>, Vec<String>) {
        let mut degraded = Vec::new();
        if let Some(why) = self.registry.store_stopped() {
            degraded.push(format!("the store stopped: {why}"));
        }
        if let Some(stats) = self.registry.get(key)
            && let Some((n, last)) = stats.health.failing()
        {
            degraded.push(format!("{n} I/O error(s) on its data path since the last successful I/O: {last}"));
        }
        let busy = self.running.iter().filter_map(|t| task_on(t, key)).collect();
        (degraded, busy)
    }

    /// The status of an image whose information was read.
    pub fn of(&self, backend: &dyn Backend, spec: &ImageSpec, info: &ImageInfo) -> Status {
        let key = spec.to_string();
        let (mut degraded, busy) = self.quick(&key);
        let mut found = Vec::new();
        if info.status == ImageStatus::Degraded {
            let why = info.status_reason.as_deref().unwrap_or("no reason given");
            found.push(format!("the backend reports it degraded: {why}"));
        }
        if let Some(parent) = &info.parent
            && let Some(why) = missing_parent(backend, parent)
        {
            found.push(why);
        }
        let found = (!found.is_empty()).then(|| found.join("; "));
        self.registry.found.set(key, found.clone());
        degraded.extend(found);
        let mut status = Status::from_reasons(degraded, busy);
        if status.status == ImageStatus::Ok && info.status == ImageStatus::Migrating {
            status = Status { status: ImageStatus::Migrating, detail: Some("the backend reports a migration".into()) };
        }
        status
    }

    /// The status of a listed image whose information cannot be read.
    pub fn unreadable(&self, spec: &ImageSpec, err: &basalt_core::Error) -> Status {
        let key = spec.to_string();
        let (mut degraded, busy) = self.quick(&key);
        let why = format!("its information cannot be read: {}", err.message());
        self.registry.found.set(key, Some(why.clone()));
        degraded.push(why);
        Status::from_reasons(degraded, busy)
    }

    /// The status from what is known without reading the store (the last read's findings included), for `/metrics`.
    pub fn known(&self, key: &str) -> Status {
        let (mut degraded, busy) = self.quick(key);
        degraded.extend(self.registry.found.get(key));
        Status::from_reasons(degraded, busy)
    }

    /// Every image something is known of: with data-path statistics, once found degraded, or under a running task.
    pub fn known_images(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.registry.all().into_iter().map(|(k, _)| k).collect();
        keys.extend(self.registry.found.keys());
        for task in &self.running {
            for field in ["image_spec", "dest_image_spec"] {
                if let Some(spec) = task.metadata.get(field).and_then(Value::as_str) {
                    keys.push(spec.to_owned());
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The running task `task` as it concerns image `key`, in words (`flatten, 40% done`).
fn task_on(task: &TaskInfo, key: &str) -> Option<String> {
    let field = |name: &str| task.metadata.get(name).and_then(Value::as_str);
    let what = task.name.strip_prefix("rbd/").unwrap_or(&task.name).replace('_', " ");
    let what = if field("image_spec") == Some(key) {
        match field("dest_image_spec") {
            Some(dest) => format!("{what} to {dest}"),
            None => what,
        }
    } else if field("dest_image_spec") == Some(key) {
        format!("{what} from {}", field("image_spec").unwrap_or("?"))
    } else {
        return None;
    };
    Some(format!("{what} running, {}% done (task {})", task.progress, task.id))
}

/// Why the parent cannot be found, if it cannot.
fn missing_parent(backend: &dyn Backend, parent: &basalt_core::ParentInfo) -> Option<String> {
    let location = PoolNs::new(parent.pool.clone(), parent.namespace.clone());
    let name = if parent.namespace.is_default() {
        format!("{}/{}@{}", parent.pool, parent.image, parent.snap)
    } else {
        format!("{}/{}/{}@{}", parent.pool, parent.namespace, parent.image, parent.snap)
    };
    if parent.in_trash {
        return match backend.trash_list(&location) {
            Ok(entries) if entries.iter().any(|e| e.id == parent.image_id) => None,
            Ok(_) => Some(format!("its parent {name} is not in the trash where it should be")),
            Err(e) => Some(format!("its parent {name} cannot be found: {}", e.message())),
        };
    }
    let spec = ImageSpec::new(parent.pool.clone(), parent.namespace.clone(), parent.image.clone());
    match backend.snap_list(&spec) {
        Ok(snaps) if snaps.iter().any(|s| s.name == parent.snap) => None,
        Ok(_) => Some(format!("its parent snapshot {name} is missing")),
        Err(e) => Some(format!("its parent {name} cannot be found: {}", e.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::MeteredBackend;
    use crate::store::ServerStore;
    use crate::tasks::{Started, Tasks};
    use basalt_core::{CreateOptions, OpenTarget, PoolName};

    /// A real engine under the metered backend, with a real task registry: an image is migrating exactly while a
    /// task works on it, and the task is named; it is degraded while its data path fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_task_makes_its_images_migrating_and_data_path_errors_degraded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine");
        let registry = Arc::new(Registry::default());
        let backend: Arc<dyn Backend> = Arc::new(MeteredBackend::new(Arc::new(engine), registry.clone()));
        let pool = PoolName::new("rbd").expect("pool");
        backend.pool_create(&pool).expect("pool create");
        backend.pool_application_enable(&pool, "rbd").expect("tag rbd");
        let spec = ImageSpec::parse("rbd/vm").expect("spec");
        let other = ImageSpec::parse("rbd/other").expect("spec");
        for s in [&spec, &other] {
            backend.image_create(s, &CreateOptions::with_size(1 << 20)).expect("create");
        }
        let tasks = Arc::new(Tasks::new(ServerStore::open(dir.path()).expect("store")).expect("tasks"));
        let status = |s: &ImageSpec| {
            let ctx = StatusCtx::new(registry.clone(), tasks.list().0);
            ctx.of(backend.as_ref(), s, &backend.image_info(s).expect("info"))
        };
        assert_eq!(status(&spec), Status { status: ImageStatus::Ok, detail: None });

        // A task that holds until released: the registry shows it running on rbd/vm for as long as it does.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let started = tasks
            .start(backend.clone(), "rbd/flatten", serde_json::json!({"image_spec": "rbd/vm"}), move |_, _| {
                hold.recv().map_err(|_| basalt_core::Error::io("released"))?;
                Ok(Value::Null)
            })
            .await;
        assert!(matches!(started, Started::Running(_)), "the held task still runs after the call's wait");
        let during = status(&spec);
        assert_eq!(during.status, ImageStatus::Migrating, "{during:?}");
        assert!(
            during.detail.as_deref().is_some_and(|d| d.starts_with("flatten running, 0% done (task ")),
            "{during:?}"
        );
        assert_eq!(status(&other).status, ImageStatus::Ok, "another image is not concerned");
        let ctx = StatusCtx::new(registry.clone(), tasks.list().0);
        assert_eq!(ctx.known_images(), ["rbd/vm"], "/metrics knows the image under a task");
        release.send(()).expect("release");
        tasks.wait_idle().await;
        assert_eq!(status(&spec).status, ImageStatus::Ok, "the task finished");

        // A read past the end is a refusal, not damage; an I/O error that the engine answers is damage until an
        // operation succeeds.
        let io = backend.open(&spec, &OpenTarget::Head, "test").expect("open");
        let mut buf = [0u8; 512];
        assert!(io.read(2 << 20, &mut buf).is_err());
        assert_eq!(status(&spec).status, ImageStatus::Ok, "a refused read does not degrade the image");
        let stats = registry.get("rbd/vm").expect("stats");
        stats.health.failed(&basalt_core::Error::io("checksum mismatch in object 0"));
        let bad = status(&spec);
        assert_eq!(bad.status, ImageStatus::Degraded, "{bad:?}");
        assert!(
            bad.detail.as_deref().is_some_and(|d| d.contains("1 I/O error(s)") && d.contains("checksum")),
            "{bad:?}"
        );
        io.read(0, &mut buf).expect("read");
        assert_eq!(status(&spec).status, ImageStatus::Ok, "a successful read clears it");

        // The backend, not an error's wording, says whether the store stopped: an EIO that reads like the engine's
        // refusal changes nothing while the backend answers that it works, and a non-EIO error does not ask.
        assert_eq!(backend.stopped(), None, "the metered backend answers for the engine");
        registry.observe(&basalt_core::Error::io("the store stopped after an i/o error: restart basalt"), || None);
        registry.observe(&basalt_core::Error::busy("busy"), || panic!("only an EIO asks whether the store stopped"));
        assert_eq!(status(&other).status, ImageStatus::Ok, "the backend did not say it stopped");
        // An EIO after which the backend says it stopped degrades every image until the server restarts.
        registry.observe(&basalt_core::Error::io("sync failed"), || Some("the journal failed a sync".into()));
        let stopped = status(&other);
        assert_eq!(stopped.status, ImageStatus::Degraded);
        assert_eq!(stopped.detail.as_deref(), Some("the store stopped: the journal failed a sync"), "{stopped:?}");
    }

    fn task(name: &str, metadata: Value) -> TaskInfo {
        TaskInfo {
            id: "1-abcd".into(),
            name: name.into(),
            metadata,
            begin_time: 1,
            end_time: None,
            progress: 40,
            success: None,
            exception: None,
            ret_value: None,
        }
    }

    #[test]
    fn a_task_names_its_images_and_degraded_wins() {
        let copy = task("rbd/copy", serde_json::json!({"image_spec": "rbd/a", "dest_image_spec": "rbd/b"}));
        assert_eq!(task_on(&copy, "rbd/a").as_deref(), Some("copy to rbd/b running, 40% done (task 1-abcd)"));
        assert_eq!(task_on(&copy, "rbd/b").as_deref(), Some("copy from rbd/a running, 40% done (task 1-abcd)"));
        assert_eq!(task_on(&copy, "rbd/c"), None);
        let s = Status::from_reasons(vec!["x".into()], vec!["y".into()]);
        assert_eq!((s.status, s.detail.as_deref()), (ImageStatus::Degraded, Some("x")));
        let s = Status::from_reasons(vec![], vec!["y".into(), "z".into()]);
        assert_eq!((s.status, s.detail.as_deref()), (ImageStatus::Migrating, Some("y; z")));
        assert_eq!(Status::from_reasons(vec![], vec![]).status, ImageStatus::Ok);
    }
}
