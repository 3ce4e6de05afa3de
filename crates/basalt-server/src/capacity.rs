//! Pool usage, quotas and health for `/metrics`, as Ceph's mgr `prometheus` module exports them (`ceph_pool_*`,
//! `ceph_health_status`, `ceph_health_detail`), so Ceph's pool dashboards and alert rules work on the embedded engine.
//!
//! Every [`REFRESH`] the server lists the pools (which also refreshes the engine's per-pool full flags, so writes to
//! a pool that reached its quota answer EDQUOT) and reads the data directory's file system. Scrapes read the last
//! snapshot and never scan the store. With `--ceph-conf` nothing runs here: the cluster's own exporter has these series.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_core::{Backend, PoolInfo};

use crate::perf::{family, label_value, single};

/// How often pool usage is taken.
pub const REFRESH: Duration = Duration::from_secs(5);
/// A pool at or over this share of a quota raises `POOL_NEAR_FULL` (as Ceph's OSDs' default nearfull ratio).
pub const NEARFULL_RATIO: f64 = 0.85;
/// The data directory's file system at or over this share raises `OSD_NEARFULL` (`mon_osd_nearfull_ratio`).
pub const FS_NEARFULL_RATIO: f64 = 0.85;
/// The data directory's file system at or over this share raises `OSD_FULL` (`mon_osd_full_ratio`).
pub const FS_FULL_RATIO: f64 = 0.95;

/// Ceph's health severities, as `ceph_health_status` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `HEALTH_OK` (0).
    Ok = 0,
    /// `HEALTH_WARN` (1).
    Warn = 1,
    /// `HEALTH_ERR` (2).
    Err = 2,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Ok => "HEALTH_OK",
            Severity::Warn => "HEALTH_WARN",
            Severity::Err => "HEALTH_ERR",
        }
    }
}

/// The health checks basalt raises, with Ceph's names and severities.
pub const CHECKS: [(&str, Severity); 4] = [
    ("POOL_FULL", Severity::Warn),
    ("POOL_NEAR_FULL", Severity::Warn),
    ("OSD_NEARFULL", Severity::Warn),
    ("OSD_FULL", Severity::Err),
];

/// Size and free space of a file system, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Total size.
    pub total: u64,
    /// Free to unprivileged users.
    pub avail: u64,
}

impl FsUsage {
    /// The file system holding `path`.
    pub fn of(path: &Path) -> Option<FsUsage> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs is plain old data; all zeros is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some(FsUsage {
            total: (st.f_blocks as u64).saturating_mul(unit),
            avail: (st.f_bavail as u64).saturating_mul(unit),
        })
    }

    fn used_ratio(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.total.saturating_sub(self.avail) as f64 / self.total as f64 }
    }
}

/// What one refresh saw.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every pool with usage and quotas.
    pub pools: Vec<PoolInfo>,
    /// The data directory's file system.
    pub fs: Option<FsUsage>,
}

/// A pool's room before it is full: the file system's free space, and no more than its quota leaves.
pub fn max_avail(pool: &PoolInfo, fs: Option<FsUsage>) -> u64 {
    let free = fs.map_or(0, |f| f.avail);
    if pool.quota_max_bytes > 0 { free.min(pool.quota_max_bytes.saturating_sub(pool.used_bytes)) } else { free }
}

/// Ceph's `percent_used`: a fraction (0 to 1) of stored over stored plus room.
pub fn percent_used(pool: &PoolInfo, fs: Option<FsUsage>) -> f64 {
    let room = max_avail(pool, fs);
    let used = pool.used_bytes as f64;
    if used + room as f64 == 0.0 { 0.0 } else { used / (used + room as f64) }
}

fn near_quota(pool: &PoolInfo) -> bool {
    let share = |used: u64, quota: u64| quota > 0 && used as f64 >= quota as f64 * NEARFULL_RATIO;
    !pool.quota_reached()
        && (share(pool.used_bytes, pool.quota_max_bytes) || share(pool.objects, pool.quota_max_objects))
}

impl Snapshot {
    /// The active checks with a line saying why.
    pub fn active_checks(&self) -> Vec<(&'static str, Severity, String)> {
        let mut out = Vec::new();
        let names = |keep: &dyn Fn(&PoolInfo) -> bool| -> Vec<String> {
            self.pools.iter().filter(|p| keep(p)).map(|p| p.name.to_string()).collect()
        };
        let full = names(&|p| p.quota_reached());
        if !full.is_empty() {
            out.push(("POOL_FULL", Severity::Warn, format!("{} pool(s) full: {}", full.len(), full.join(", "))));
        }
        let near = names(&near_quota);
        if !near.is_empty() {
            out.push((
                "POOL_NEAR_FULL",
                Severity::Warn,
                format!("{} pool(s) nearfull: {}", near.len(), near.join(", ")),
            ));
        }
        if let Some(fs) = self.fs {
            let ratio = fs.used_ratio();
            if ratio >= FS_FULL_RATIO {
                out.push((
                    "OSD_FULL",
                    Severity::Err,
                    format!("the data directory's file system is {:.0}% full", ratio * 100.0),
                ));
            } else if ratio >= FS_NEARFULL_RATIO {
                out.push((
                    "OSD_NEARFULL",
                    Severity::Warn,
                    format!("the data directory's file system is {:.0}% full", ratio * 100.0),
                ));
            }
        }
        out
    }

    /// Ceph's overall status: the worst active check.
    pub fn status(&self) -> Severity {
        self.active_checks().iter().map(|(_, s, _)| *s).max().unwrap_or(Severity::Ok)
    }

    /// Writes the pool, cluster and health families.
    pub fn write_metrics(&self, out: &mut String) {
        let fs = self.fs;
        single(out, "ceph_health_status", "Cluster health status", "untyped", self.status() as u8 as f64);
        let active = self.active_checks();
        let detail: Vec<(String, f64)> = CHECKS
            .iter()
            .map(|(name, severity)| {
                let on = active.iter().any(|(n, _, _)| n == name);
                (format!("name=\"{name}\",severity=\"{}\"", severity.name()), if on { 1.0 } else { 0.0 })
            })
            .collect();
        family(out, "ceph_health_detail", "healthcheck status by type (0=inactive, 1=active)", "gauge", &detail);
        let total = fs.map_or(0, |f| f.total);
        single(out, "ceph_cluster_total_bytes", "DF total_bytes", "gauge", total as f64);
        let fs_used = fs.map_or(0, |f| f.total.saturating_sub(f.avail));
        single(out, "ceph_cluster_total_used_bytes", "DF total_used_bytes", "gauge", fs_used as f64);
        single(out, "ceph_cluster_total_used_raw_bytes", "DF total_used_raw_bytes", "gauge", fs_used as f64);
        let id = |p: &PoolInfo| format!("pool_id=\"{}\"", p.id);
        let metadata: Vec<(String, f64)> = self
            .pools
            .iter()
            .map(|p| {
                let labels = format!(
                    "{},name=\"{}\",type=\"replicated\",description=\"replica:1\",compression_mode=\"none\"",
                    id(p),
                    label_value(p.name.as_str())
                );
                (labels, 1.0)
            })
            .collect();
        family(out, "ceph_pool_metadata", "POOL Metadata", "untyped", &metadata);
        type Value = fn(&PoolInfo, Option<FsUsage>) -> f64;
        let stats: [(&str, Value); 9] = [
            ("max_avail", |p, fs| max_avail(p, fs) as f64),
            ("avail_raw", |p, fs| max_avail(p, fs) as f64),
            ("stored", |p, _| p.used_bytes as f64),
            ("stored_raw", |p, _| p.used_bytes as f64),
            ("objects", |p, _| p.objects as f64),
            ("quota_bytes", |p, _| p.quota_max_bytes as f64),
            ("quota_objects", |p, _| p.quota_max_objects as f64),
            ("bytes_used", |p, _| p.used_bytes as f64),
            ("percent_used", percent_used),
        ];
        for (stat, value) in stats {
            let rows: Vec<(String, f64)> = self.pools.iter().map(|p| (id(p), value(p, fs))).collect();
            family(out, &format!("ceph_pool_{stat}"), &format!("DF pool {stat}"), "gauge", &rows);
        }
    }
}

/// The last snapshot, shared by the refresher and `/metrics`.
#[derive(Debug, Default)]
pub struct Capacity {
    /// The data directory whose file system holds the pools; `None` when a Ceph cluster serves them.
    data_dir: Option<PathBuf>,
    /// The embedded engine, whose metadata reserve is read on each request (a file length: no scan).
    engine: Option<Arc<basalt_engine::Engine>>,
    last: Mutex<Option<Snapshot>>,
}

impl Capacity {
    /// For the embedded engine in `data_dir`.
    pub fn embedded(data_dir: PathBuf, engine: Arc<basalt_engine::Engine>) -> Capacity {
        Capacity { data_dir: Some(data_dir), engine: Some(engine), last: Mutex::new(None) }
    }

    /// The embedded engine's metadata reserve now (docs/FORMAT.md, "The metadata reserve"); `None` with Ceph.
    pub fn reserve(&self) -> Option<basalt_engine::ReserveStatus> {
        self.engine.as_ref().map(|engine| engine.metadata_reserve())
    }

    /// The embedded engine's layer files open now and their limit; `None` with Ceph.
    pub fn layer_files(&self) -> Option<(usize, usize)> {
        self.engine.as_ref().map(|engine| engine.open_layer_files())
    }

    /// The embedded engine's journal counters since it opened; `None` with Ceph.
    pub fn journal(&self) -> Option<basalt_engine::JournalStats> {
        self.engine.as_ref().map(|engine| engine.journal_stats())
    }

    /// Whether this server exports pool and health series (the embedded engine).
    pub fn exported(&self) -> bool {
        self.data_dir.is_some()
    }

    /// The last snapshot, if one was taken.
    pub fn last(&self) -> Option<Snapshot> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes a snapshot now (blocking: lists the pools).
    pub fn refresh(&self, backend: &dyn Backend) {
        let Some(dir) = &self.data_dir else { return };
        match backend.pool_list() {
            Ok(pools) => {
                let snapshot = Snapshot { pools, fs: FsUsage::of(dir) };
                *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot);
            }
            Err(err) => tracing::warn!(error = %err, "cannot read pool usage"),
        }
    }
}

/// Refreshes `capacity` every [`REFRESH`] until `stop`.
pub async fn run(backend: Arc<dyn Backend>, capacity: Arc<Capacity>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if !capacity.exported() {
        return;
    }
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (backend, capacity) = (backend.clone(), capacity.clone());
                let _ = tokio::task::spawn_blocking(move || capacity.refresh(backend.as_ref())).await;
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_core::PoolName;

    fn pool(name: &str, used: u64, quota: u64) -> PoolInfo {
        PoolInfo {
            name: PoolName::new(name).expect("name"),
            id: 7,
            applications: vec!["rbd".into()],
            image_count: 1,
            provisioned_bytes: 1 << 30,
            used_bytes: used,
            objects: used >> 22,
            quota_max_bytes: quota,
            quota_max_objects: 0,
            healthy: true,
        }
    }

    #[test]
    fn quotas_raise_cephs_pool_checks_and_bound_the_room() {
        let fs = Some(FsUsage { total: 100 << 30, avail: 50 << 30 });
        let mut snapshot = Snapshot { pools: vec![pool("rbd", 10 << 20, 0)], fs };
        assert!(snapshot.active_checks().is_empty());
        assert_eq!(snapshot.status(), Severity::Ok);
        assert_eq!(max_avail(&snapshot.pools[0], fs), 50 << 30);

        snapshot.pools[0] = pool("rbd", 90 << 20, 100 << 20);
        assert_eq!(max_avail(&snapshot.pools[0], fs), 10 << 20, "the quota bounds the room");
        assert!((percent_used(&snapshot.pools[0], fs) - 0.9).abs() < 1e-9);
        assert_eq!(snapshot.active_checks().iter().map(|c| c.0).collect::<Vec<_>>(), ["POOL_NEAR_FULL"]);
        assert_eq!(snapshot.status(), Severity::Warn);

        snapshot.pools[0] = pool("rbd", 100 << 20, 100 << 20);
        assert_eq!(snapshot.active_checks().iter().map(|c| c.0).collect::<Vec<_>>(), ["POOL_FULL"]);
        let mut out = String::new();
        snapshot.write_metrics(&mut out);
        assert!(out.contains("\nceph_health_status 1.0"), "{out}");
        assert!(out.contains("\nceph_health_detail{name=\"POOL_FULL\",severity=\"HEALTH_WARN\"} 1.0"), "{out}");
        assert!(out.contains("\nceph_health_detail{name=\"POOL_NEAR_FULL\",severity=\"HEALTH_WARN\"} 0.0"), "{out}");
        assert!(out.contains("\nceph_pool_metadata{pool_id=\"7\",name=\"rbd\",type=\"replicated\""), "{out}");
        assert!(out.contains("\nceph_pool_percent_used{pool_id=\"7\"} 1.0"), "{out}");
        assert!(out.contains("\nceph_pool_quota_bytes{pool_id=\"7\"} 104857600.0"), "{out}");

        // A file system over 95% is Ceph's OSD_FULL, an error.
        snapshot.fs = Some(FsUsage { total: 100, avail: 4 });
        assert_eq!(snapshot.status(), Severity::Err);
    }
}
