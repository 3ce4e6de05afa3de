//! Background tasks: long operations run on the blocking pool with progress; a call waits briefly, then answers 202
//! and the client polls `/api/task`. Task records survive a restart: one that was running is shown as failed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basalt_core::{Backend, Progress, Result};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{ServerStore, TASKS};

/// How long a task call waits before answering 202.
pub const WAIT_FOR: Duration = Duration::from_secs(2);
/// Finished tasks kept for listing.
pub const FINISHED_KEPT: usize = 200;

/// A task as `/api/task` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Unique id.
    pub id: String,
    /// Kind (`rbd/flatten`).
    pub name: String,
    /// What it works on.
    pub metadata: serde_json::Value,
    /// Start time (seconds since the epoch).
    pub begin_time: u64,
    /// End time, once finished.
    pub end_time: Option<u64>,
    /// 0 to 100.
    pub progress: u8,
    /// Set when finished.
    pub success: Option<bool>,
    /// The error of a failed task.
    pub exception: Option<TaskError>,
    /// What a successful task returned.
    pub ret_value: Option<serde_json::Value>,
}

/// The error of a failed task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// Message.
    pub detail: String,
    /// Errno-style code.
    pub code: String,
}

#[derive(Debug)]
struct Running {
    info: TaskInfo,
    progress: Arc<Progress>,
}

#[derive(Debug, Default)]
struct Inner {
    running: Vec<Running>,
    finished: VecDeque<TaskInfo>,
}

/// The task registry.
#[derive(Debug)]
pub struct Tasks {
    store: ServerStore,
    /// The prefix of this server's task keys: empty for a store of its own, the server's id when several servers
    /// share the store (each keeps and recovers only its own tasks).
    scope: String,
    inner: Mutex<Inner>,
    idle: tokio::sync::Notify,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What a finished task produced, as the call answers it.
pub type TaskOutcome = std::result::Result<serde_json::Value, ApiError>;

/// What a task call answers: finished in time, or still running.
#[derive(Debug)]
pub enum Started {
    /// It finished within [`WAIT_FOR`].
    Done(TaskOutcome),
    /// It goes on in the background.
    Running(TaskInfo),
    /// Not started: a task of the same kind already works on the same thing ([`Tasks::start_exclusive`]).
    Busy,
}

impl Tasks {
    /// Loads task records; tasks that were running when the server stopped are marked failed.
    pub fn new(store: ServerStore) -> Result<Tasks> {
        Tasks::scoped(store, String::new())
    }

    /// Like [`Tasks::new`] on a store several servers share: this server's records are those under `scope/`.
    pub fn scoped(store: ServerStore, scope: String) -> Result<Tasks> {
        let scope = if scope.is_empty() { scope } else { format!("{scope}/") };
        let mut finished: Vec<TaskInfo> = store
            .list::<TaskInfo>(TASKS)?
            .into_iter()
            .filter(|(key, _)| key.strip_prefix(scope.as_str()).is_some_and(|id| !id.contains('/')))
            .map(|(_, t)| t)
            .collect();
        for task in finished.iter_mut().filter(|t| t.success.is_none()) {
            task.success = Some(false);
            task.end_time = Some(now());
            task.exception = Some(TaskError {
                detail:
                    "the server stopped while this task ran: nothing past its last safe point was done; run it again"
                        .into(),
                code: "ECANCELED".into(),
            });
            store.put(TASKS, &format!("{scope}{}", task.id), task)?;
        }
        finished.sort_by_key(|t| t.begin_time);
        let skip = finished.len().saturating_sub(FINISHED_KEPT);
        let finished: VecDeque<TaskInfo> = finished.into_iter().skip(skip).collect();
        Ok(Tasks {
            store,
            scope,
            inner: Mutex::new(Inner { running: Vec::new(), finished }),
            idle: tokio::sync::Notify::new(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.scope)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `work` on the blocking pool and waits up to [`WAIT_FOR`] for it.
    pub async fn start<F>(
        self: &Arc<Self>,
        backend: Arc<dyn Backend>,
        name: &str,
        metadata: serde_json::Value,
        work: F,
    ) -> Started
    where
        F: FnOnce(&dyn Backend, &Progress) -> basalt_core::Result<serde_json::Value> + Send + 'static,
    {
        self.launch(backend, name, metadata, false, work).await
    }

    /// [`Tasks::start`], unless a task of the same kind already works on the same thing (the same `metadata`):
    /// then nothing starts and the answer is [`Started::Busy`]. The check and the start are one step under the
    /// registry's lock, so of two calls at once only one starts.
    pub async fn start_exclusive<F>(
        self: &Arc<Self>,
        backend: Arc<dyn Backend>,
        name: &str,
        metadata: serde_json::Value,
        work: F,
    ) -> Started
    where
        F: FnOnce(&dyn Backend, &Progress) -> basalt_core::Result<serde_json::Value> + Send + 'static,
    {
        self.launch(backend, name, metadata, true, work).await
    }

    async fn launch<F>(
        self: &Arc<Self>,
        backend: Arc<dyn Backend>,
        name: &str,
        metadata: serde_json::Value,
        exclusive: bool,
        work: F,
    ) -> Started
    where
        F: FnOnce(&dyn Backend, &Progress) -> basalt_core::Result<serde_json::Value> + Send + 'static,
    {
        let progress = Progress::new();
        let info = TaskInfo {
            id: format!("{}-{:08x}", now(), rand::random::<u32>()),
            name: name.to_owned(),
            metadata,
            begin_time: now(),
            end_time: None,
            progress: 0,
            success: None,
            exception: None,
            ret_value: None,
        };
        {
            let mut inner = self.lock();
            if exclusive && inner.running.iter().any(|r| r.info.name == info.name && r.info.metadata == info.metadata) {
                return Started::Busy;
            }
            inner.running.push(Running { info: info.clone(), progress: progress.clone() });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tasks = self.clone();
        let id = info.id.clone();
        let record = info.clone();
        tokio::task::spawn_blocking(move || {
            // The record is written before the work starts, so the task's end (which rewrites it) comes after; on
            // the blocking pool, as the write is a commit of the server's store.
            let _ = tasks.store.put(TASKS, &tasks.key(&record.id), &record);
            let result = work(backend.as_ref(), &progress).map_err(ApiError::from);
            tasks.finish(&id, &result);
            let _ = tx.send(result);
        });
        match tokio::time::timeout(WAIT_FOR, rx).await {
            Ok(Ok(result)) => Started::Done(result),
            Ok(Err(_)) => Started::Done(Err(ApiError::internal("the task ended without a result"))),
            Err(_) => Started::Running(info),
        }
    }

    fn finish(&self, id: &str, result: &TaskOutcome) {
        let mut inner = self.lock();
        let Some(pos) = inner.running.iter().position(|r| r.info.id == id) else { return };
        let mut info = inner.running.remove(pos).info;
        info.end_time = Some(now());
        info.progress = 100;
        match result {
            Ok(value) => {
                info.success = Some(true);
                info.ret_value = Some(value.clone());
            }
            Err(err) => {
                info.success = Some(false);
                info.exception = Some(TaskError { detail: err.detail.clone(), code: err.code.clone() });
            }
        }
        let _ = self.store.put(TASKS, &self.key(&info.id), &info);
        inner.finished.push_back(info);
        while inner.finished.len() > FINISHED_KEPT {
            if let Some(old) = inner.finished.pop_front() {
                let _ = self.store.remove(TASKS, &self.key(&old.id));
            }
        }
        if inner.running.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Running tasks (with current progress) and finished ones, oldest first.
    pub fn list(&self) -> (Vec<TaskInfo>, Vec<TaskInfo>) {
        let inner = self.lock();
        let running = inner
            .running
            .iter()
            .map(|r| TaskInfo { progress: (r.progress.fraction() * 100.0) as u8, ..r.info.clone() })
            .collect();
        (running, inner.finished.iter().cloned().collect())
    }

    /// Asks every running task to stop at its next safe point.
    pub fn cancel_all(&self) {
        for running in &self.lock().running {
            running.progress.cancel();
        }
    }

    /// Waits until no task runs (bounded, for shutdown).
    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.idle.notified();
            if self.lock().running.is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str) -> TaskInfo {
        TaskInfo {
            id: id.to_owned(),
            name: "rbd/flatten".to_owned(),
            metadata: serde_json::json!({}),
            begin_time: 1,
            end_time: None,
            progress: 40,
            success: None,
            exception: None,
            ret_value: None,
        }
    }

    /// Of many exclusive starts of one kind on one thing at once, exactly one runs: the check and the start are
    /// one step (checking first and starting after let several through while the task record was written).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_exclusive_starts_at_once_exactly_one_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine");
        let backend: Arc<dyn Backend> = Arc::new(engine);
        let tasks = Arc::new(Tasks::new(ServerStore::open(dir.path()).expect("store")).expect("tasks"));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(Mutex::new(hold));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (tasks, backend, hold) = (tasks.clone(), backend.clone(), hold.clone());
                tokio::spawn(async move {
                    let meta = serde_json::json!({"image_spec": "rbd/vm"});
                    tasks
                        .start_exclusive(backend, "rbd/scrub", meta, move |_, _| {
                            let _ = hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                            Ok(serde_json::Value::Null)
                        })
                        .await
                })
            })
            .collect();
        // Every call answers within the wait: refused at once, or 202 once the held task outlasts it.
        let mut started = 0;
        let mut busy = 0;
        for call in calls {
            match call.await.expect("call") {
                Started::Running(_) => started += 1,
                Started::Busy => busy += 1,
                Started::Done(done) => panic!("the held task finished: {done:?}"),
            }
        }
        assert_eq!((started, busy), (1, 7));
        assert_eq!(tasks.list().0.len(), 1, "one task runs");
        release.send(()).expect("release");
        tasks.wait_idle().await;
        assert_eq!(tasks.list().1.len(), 1, "one task ran");
    }

    /// A task's record is in the store before its work starts, so a server that stops while it runs reports it
    /// as interrupted at its next start.
    #[tokio::test]
    async fn a_task_is_recorded_before_its_work_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = basalt_engine::Engine::open(dir.path(), Arc::new(basalt_core::SystemClock)).expect("engine");
        let backend: Arc<dyn Backend> = Arc::new(engine);
        let store = ServerStore::open(dir.path()).expect("store");
        let tasks = Arc::new(Tasks::new(store.clone()).expect("tasks"));
        let seen = store.clone();
        let started = tasks
            .start(backend, "rbd/flatten", serde_json::json!({"image_spec": "rbd/vm"}), move |_, _| {
                let records = seen.list::<TaskInfo>(TASKS).map_err(|e| basalt_core::Error::io(e.to_string()))?;
                Ok(serde_json::json!(records.iter().filter(|(_, t)| t.success.is_none()).count()))
            })
            .await;
        match started {
            Started::Done(Ok(value)) => assert_eq!(value, serde_json::json!(1), "the running task's record"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn servers_sharing_a_store_recover_only_their_own_tasks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ServerStore::open(dir.path()).expect("store");
        // Server a was running a task when it stopped; server b is running one now.
        store.put(TASKS, "a/1-aaaa", &running("1-aaaa")).expect("put");
        store.put(TASKS, "b/2-bbbb", &running("2-bbbb")).expect("put");

        let a = Tasks::scoped(store.clone(), "a".to_owned()).expect("tasks of a");
        let (_, finished) = a.list();
        assert_eq!(finished.iter().map(|t| (t.id.as_str(), t.success)).collect::<Vec<_>>(), [("1-aaaa", Some(false))]);
        let b_record: TaskInfo = store.get(TASKS, "b/2-bbbb").expect("get").expect("b's task");
        assert_eq!(b_record.success, None, "another server's running task is left alone");

        // A store of its own (the embedded engine) keeps unscoped keys, as before.
        store.put(TASKS, "3-cccc", &running("3-cccc")).expect("put");
        let own = Tasks::new(store.clone()).expect("tasks");
        assert_eq!(own.list().1.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["3-cccc"]);
    }
}
