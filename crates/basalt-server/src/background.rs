//! Background I/O: flatten, copy and deep copy move data inside the backend, past the data path's metered handles.
//! Their bytes are counted into the images' counters as a separate "background" series, from the task's progress:
//! before the task starts the bytes it will move are estimated from `du` (what is allocated in the source), and as
//! its progress advances that fraction of the estimate is added to the source's reads and the target's writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use basalt_core::{Backend, ImageSpec, Progress, Result};

use crate::datapath::Registry;

/// How often a running task's progress is turned into counted bytes.
const POLL: Duration = Duration::from_millis(250);

/// Where a task's bytes are counted.
#[derive(Debug, Clone)]
pub struct Meter {
    /// Bytes the task is expected to move when its progress reaches 100%.
    pub estimate: u64,
    /// The image read from.
    pub source: ImageSpec,
    /// The image written to.
    pub target: ImageSpec,
    /// Bytes per counted operation (the object size).
    pub op_bytes: u64,
}

impl Meter {
    /// The bytes a copy of `source` (its head, or the snapshot `snap`) moves: everything allocated up to it.
    pub fn copy(backend: &dyn Backend, source: &ImageSpec, snap: Option<&str>, target: &ImageSpec) -> Meter {
        let estimate = allocated_through(backend, source, snap);
        Meter { estimate, source: source.clone(), target: target.clone(), op_bytes: object_bytes(backend, source) }
    }

    /// The bytes a deep copy moves: every snapshot's own data and the head's.
    pub fn deep_copy(backend: &dyn Backend, source: &ImageSpec, target: &ImageSpec) -> Meter {
        let estimate = backend.du(source).map(|e| e.iter().map(|d| d.used_bytes).sum()).unwrap_or(0);
        Meter { estimate, source: source.clone(), target: target.clone(), op_bytes: object_bytes(backend, source) }
    }

    /// The bytes a flatten copies up: what the parent snapshot has allocated, within the image's size. They are read
    /// through the image (from its parent) and written into it, so both count on the image.
    pub fn flatten(backend: &dyn Backend, image: &ImageSpec) -> Meter {
        let info = backend.image_info(image).ok();
        let estimate = info
            .as_ref()
            .and_then(|i| i.parent.as_ref().map(|p| (i.size_bytes, p)))
            .map(|(size, p)| {
                let parent = ImageSpec::new(p.pool.clone(), p.namespace.clone(), p.image.clone());
                allocated_through(backend, &parent, Some(p.snap.as_str())).min(size)
            })
            .unwrap_or(0);
        Meter { estimate, source: image.clone(), target: image.clone(), op_bytes: object_bytes(backend, image) }
    }

    /// Runs `work`, counting the bytes its progress says it moved; the rest of the estimate is counted when it
    /// succeeds (progress may stop short of its total on the last step).
    pub fn run<T>(&self, registry: &Arc<Registry>, progress: &Progress, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let counted = std::sync::Mutex::new(0u64);
        let done = AtomicBool::new(false);
        let count = |fraction: f64| {
            let upto = (self.estimate as f64 * fraction.clamp(0.0, 1.0)) as u64;
            let mut counted = counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if upto > *counted {
                let delta = upto - *counted;
                *counted = upto;
                let ops = delta.div_ceil(self.op_bytes.max(1));
                registry.image(&self.source).counters.record_background(delta, 0, ops);
                registry.image(&self.target).counters.record_background(0, delta, 0);
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    std::thread::park_timeout(POLL);
                    count(progress.fraction());
                }
            });
            let result = work();
            done.store(true, Ordering::Relaxed);
            count(if result.is_ok() { 1.0 } else { progress.fraction() });
            result
        })
    }
}

/// Bytes allocated in `spec` up to and including the snapshot `snap` (or the head when `None`).
fn allocated_through(backend: &dyn Backend, spec: &ImageSpec, snap: Option<&str>) -> u64 {
    let Ok(entries) = backend.du(spec) else { return 0 };
    let mut total = 0;
    for entry in entries {
        total += entry.used_bytes;
        if let (Some(want), Some(name)) = (snap, entry.snap.as_ref())
            && name.as_str() == want
        {
            break;
        }
    }
    total
}

fn object_bytes(backend: &dyn Backend, spec: &ImageSpec) -> u64 {
    backend.image_info(spec).map(|i| i.order.object_size_bytes()).unwrap_or(4 << 20)
}
