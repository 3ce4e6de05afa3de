//! `GET /api/alerts`: what needs an operator's attention, computed on request from what the server already keeps: the
//! last pool and file-system figures (see [`crate::capacity`]), image statuses (see [`crate::status`]), failed tasks,
//! the store's state, and the expiry of the NBD and API certificates. Nothing here scans the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use basalt_core::PoolInfo;
use basalt_core::units::format_size;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::perf::{family, image_labels, label_value, single};
use crate::state::AppState;
use crate::tasks::TaskInfo;

/// A share of a quota or of the file system that raises a warning.
pub const NEAR_FULL: f64 = 0.85;
/// A share that raises a critical alert.
pub const FULL: f64 = 0.95;
/// Failed tasks stay alerts this long after they ended.
pub const FAILED_TASK_SECS: u64 = 24 * 3600;
/// Certificates expiring within this many days raise a warning (critical within 7 days, or expired).
pub const CERT_WARN_DAYS: i64 = 30;

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable while the condition lasts (`pool_full:rbd`).
    pub id: String,
    /// Warning or critical.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// What was seen and what to do.
    pub detail: String,
    /// When the server first saw it (seconds since the epoch).
    pub since: u64,
}

/// When each alert was first seen, so `since` holds across requests.
#[derive(Debug, Default)]
pub struct FirstSeen(Mutex<HashMap<String, u64>>);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn share(used: u64, quota: u64) -> f64 {
    if quota == 0 { 0.0 } else { used as f64 / quota as f64 }
}

/// Pool alerts from pool figures: full at 95% of a quota (or reached), nearly full at 85%.
pub fn pool_alerts(pools: &[PoolInfo]) -> Vec<(String, Severity, String, String)> {
    let mut out = Vec::new();
    for pool in pools {
        let ratio = share(pool.used_bytes, pool.quota_max_bytes).max(share(pool.objects, pool.quota_max_objects));
        let of = |quota: u64, text: String| if quota == 0 { "no quota".to_owned() } else { format!("a {text} quota") };
        let figures = format!(
            "{} used of {}, {} objects of {}",
            format_size(pool.used_bytes),
            of(pool.quota_max_bytes, format_size(pool.quota_max_bytes)),
            pool.objects,
            of(pool.quota_max_objects, format!("{} object", pool.quota_max_objects))
        );
        if pool.quota_reached() || ratio >= FULL {
            out.push((
                format!("pool_full:{}", pool.name),
                Severity::Critical,
                format!("pool {} is full ({:.0}% of its quota)", pool.name, ratio * 100.0),
                format!("{figures}. Writes are refused with EDQUOT once the quota is reached: raise the quota or free space."),
            ));
        } else if ratio >= NEAR_FULL {
            out.push((
                format!("pool_near_full:{}", pool.name),
                Severity::Warning,
                format!("pool {} is nearly full ({:.0}% of its quota)", pool.name, ratio * 100.0),
                format!("{figures}. Raise the quota or free space before writes are refused."),
            ));
        }
    }
    out
}

/// The certificates whose expiry is watched, each read and parsed once, when basalt loads it at start: the
/// listeners serve what they loaded until a restart, so that is the expiry that matters, and no request reads or
/// parses a file.
#[derive(Debug, Clone, Default)]
pub struct Certificates(Vec<Watched>);

/// One watched certificate.
#[derive(Debug, Clone)]
struct Watched {
    /// What it is (`API`, `NBD server`, `NBD CA`).
    what: String,
    /// Its PEM file.
    path: PathBuf,
    /// When it expires (seconds since the epoch), or why that could not be read.
    expiry: Result<i64, String>,
}

impl Certificates {
    /// Reads each certificate file (what it is, its PEM file) and keeps when it expires.
    pub fn load(files: Vec<(String, PathBuf)>) -> Certificates {
        Certificates(
            files
                .into_iter()
                .map(|(what, path)| {
                    let expiry = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|pem| not_after(&pem));
                    Watched { what, path, expiry }
                })
                .collect(),
        )
    }
}

/// Seconds since the epoch at which the first certificate of a PEM file expires.
pub fn not_after(pem: &[u8]) -> Result<i64, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("no PEM certificate: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Each watched certificate: what it is, its file, and when it expires (seconds since the epoch) or why that
/// cannot be read.
fn expiries(certs: &Certificates) -> impl Iterator<Item = (&str, &Path, Result<i64, &str>)> {
    certs.0.iter().map(|w| (w.what.as_str(), w.path.as_path(), w.expiry.as_ref().copied().map_err(String::as_str)))
}

fn cert_alerts(certs: &Certificates, at: u64) -> Vec<(String, Severity, String, String)> {
    let mut out = Vec::new();
    for (what, path, expiry) in expiries(certs) {
        let id = format!("certificate_expiring:{what}");
        match expiry {
            Ok(end) => {
                let left = end - at as i64;
                let days = left.div_euclid(86_400);
                if left <= 0 {
                    out.push((
                        id,
                        Severity::Critical,
                        format!("the {what} certificate has expired"),
                        format!(
                            "{} expired at {}: replace it and restart basalt.",
                            path.display(),
                            crate::api::rfc3339(end.max(0) as u64)
                        ),
                    ));
                } else if days < CERT_WARN_DAYS {
                    let severity = if days < 7 { Severity::Critical } else { Severity::Warning };
                    out.push((
                        id,
                        severity,
                        format!("the {what} certificate expires in {days} day(s)"),
                        format!(
                            "{} is valid until {}: renew it and restart basalt before then.",
                            path.display(),
                            crate::api::rfc3339(end as u64)
                        ),
                    ));
                }
            }
            Err(e) => out.push((
                id,
                Severity::Warning,
                format!("the {what} certificate cannot be read"),
                format!("{}: {e}", path.display()),
            )),
        }
    }
    out
}

/// The failed tasks that still count as alerts at `at`: those that ended within [`FAILED_TASK_SECS`].
fn recent_failures(finished: &[TaskInfo], at: u64) -> impl Iterator<Item = &TaskInfo> {
    finished.iter().filter(move |t| {
        t.success == Some(false) && at.saturating_sub(t.end_time.unwrap_or(t.begin_time)) <= FAILED_TASK_SECS
    })
}

/// What a task worked on, from its metadata, as a user reads it: `rbd/vm1`, `rbd/vm1@snap` for a snapshot task,
/// `rbd/vm1 → rbd/vm1-copy` for a copy; the raw metadata for anything else.
fn subjects(metadata: &serde_json::Value) -> String {
    let field = |key: &str| metadata.get(key).and_then(serde_json::Value::as_str);
    match (field("image_spec").or(field("image_id_spec")), field("snapshot_name"), field("dest_image_spec")) {
        (Some(image), Some(snap), _) => format!("{image}@{snap}"),
        (Some(image), None, Some(dest)) => format!("{image} → {dest}"),
        (Some(image), None, None) => image.to_owned(),
        _ => metadata.to_string(),
    }
}

/// The alert for a metadata reserve below its size: the disk filled up, the metadata store drew on the reserve, and
/// writes of new data are refused until space comes back (docs/FORMAT.md, "The metadata reserve").
pub fn reserve_alert(reserve: basalt_engine::ReserveStatus) -> Option<(String, Severity, String, String)> {
    (reserve.held < reserve.size).then(|| {
        (
            "metadata_reserve_low".to_owned(),
            Severity::Warning,
            format!("the metadata reserve is low ({} of {})", format_size(reserve.held), format_size(reserve.size)),
            format!(
                "The data directory's file system filled up and the metadata store drew on its reserve ({} time(s) \
                 since basalt started). Writes of new data are refused with ENOSPC until space is freed: remove \
                 snapshots, images or trash, or grow the file system. The reserve refills as space comes back.",
                reserve.releases
            ),
        )
    })
}

/// The families behind the alert rules of `monitoring/basalt-alerts.yml` that `/metrics` has no other source for:
/// the store's state, recent failed tasks and certificate expiry (pool, file-system and image-status families are
/// written elsewhere). A certificate that cannot be read has no series; `/api/alerts` names it.
pub(crate) fn write_metrics(state: &AppState, finished: &[TaskInfo], out: &mut String) {
    let stopped = if state.registry.store_stopped().is_some() { 1.0 } else { 0.0 };
    single(out, "basalt_store_stopped", "The store stopped and refuses changes until a restart (1)", "gauge", stopped);
    let failed = recent_failures(finished, now()).count();
    single(
        out,
        "basalt_tasks_failed_recent",
        "Background tasks that failed in the last 24 hours",
        "gauge",
        failed as f64,
    );
    let rows: Vec<(String, f64)> =
        state.backend.checksum_errors().into_iter().map(|(image, n)| (image_labels(&image), n as f64)).collect();
    family(
        out,
        "basalt_checksum_errors_total",
        "Blocks whose data did not match its checksum, found by reads and scrubs since basalt started, per image",
        "counter",
        &rows,
    );
    if let Some(reserve) = state.capacity.reserve() {
        single(
            out,
            "basalt_metadata_reserve_bytes",
            "Bytes the metadata reserve holds now; below its size after the disk filled up",
            "gauge",
            reserve.held as f64,
        );
        single(
            out,
            "basalt_metadata_reserve_size_bytes",
            "Bytes the metadata reserve is kept at",
            "gauge",
            reserve.size as f64,
        );
        single(
            out,
            "basalt_metadata_reserve_releases_total",
            "Times the metadata store drew on the reserve for lack of space since basalt started",
            "counter",
            reserve.releases as f64,
        );
    }
    if let Some(journal) = state.capacity.journal() {
        single(
            out,
            "basalt_journal_syncs_total",
            "fdatasyncs of the embedded engine's journal since basalt started (each one serves every flush waiting)",
            "counter",
            journal.syncs as f64,
        );
        single(
            out,
            "basalt_journal_dirty_records_total",
            "Dirty-object records the embedded engine made durable before overwriting data in place",
            "counter",
            journal.dirty_records as f64,
        );
        single(
            out,
            "basalt_checkpoints_total",
            "Checkpoints of the embedded engine's journal into its metadata store since basalt started",
            "counter",
            journal.checkpoints as f64,
        );
    }
    if let Some((open, limit)) = state.capacity.layer_files() {
        single(
            out,
            "basalt_layer_files_open",
            "Layer files (and checksum sidecars) the embedded engine holds open; past basalt_layer_files_limit, idle ones are closed and reopened on use",
            "gauge",
            open as f64,
        );
        single(
            out,
            "basalt_layer_files_limit",
            "The most layer files the embedded engine keeps open (half the process's open-file limit)",
            "gauge",
            limit as f64,
        );
    }
    let rows: Vec<(String, f64)> = expiries(&state.certificates)
        .filter_map(|(what, _, end)| Some((format!("certificate=\"{}\"", label_value(what)), end.ok()? as f64)))
        .collect();
    family(
        out,
        "basalt_certificate_expiry_timestamp_seconds",
        "When a certificate basalt serves expires (seconds since the epoch)",
        "gauge",
        &rows,
    );
}

/// Every alert now, critical first.
pub fn current(state: &AppState) -> Vec<Alert> {
    let at = now();
    let mut raw: Vec<(String, Severity, String, String)> = Vec::new();
    if let Some(why) = state.registry.store_stopped() {
        raw.push((
            "store_stopped".into(),
            Severity::Critical,
            "the store stopped".into(),
            format!("{why}. It refuses every change until basalt is restarted."),
        ));
    }
    if let Some(snapshot) = state.capacity.last() {
        raw.extend(pool_alerts(&snapshot.pools));
        if let Some(fs) = snapshot.fs
            && fs.total > 0
        {
            let ratio = fs.total.saturating_sub(fs.avail) as f64 / fs.total as f64;
            let detail = format!(
                "the data directory's file system has {} free of {}. Free space or grow it: a full disk stops writes.",
                format_size(fs.avail),
                format_size(fs.total)
            );
            if ratio >= FULL {
                raw.push((
                    "filesystem_full".into(),
                    Severity::Critical,
                    format!("the data directory's file system is full ({:.0}%)", ratio * 100.0),
                    detail,
                ));
            } else if ratio >= NEAR_FULL {
                raw.push((
                    "filesystem_near_full".into(),
                    Severity::Warning,
                    format!("the data directory's file system is nearly full ({:.0}%)", ratio * 100.0),
                    detail,
                ));
            }
        }
    }
    raw.extend(state.capacity.reserve().and_then(reserve_alert));
    let ctx = state.status_ctx();
    for image in ctx.known_images() {
        let status = ctx.known(&image);
        if status.status == basalt_core::ImageStatus::Degraded {
            raw.push((
                format!("image_degraded:{image}"),
                Severity::Critical,
                format!("image {image} is degraded"),
                status.detail.unwrap_or_default(),
            ));
        }
    }
    let (_, finished) = state.tasks.list();
    let mut failed_since: HashMap<String, u64> = HashMap::new();
    for task in recent_failures(&finished, at) {
        let ended = task.end_time.unwrap_or(task.begin_time);
        let id = format!("task_failed:{}", task.id);
        failed_since.insert(id.clone(), ended);
        let why = task.exception.as_ref().map(|e| format!("{} (code {})", e.detail, e.code)).unwrap_or_default();
        let on = subjects(&task.metadata);
        raw.push((id, Severity::Warning, format!("task {} failed", task.name), format!("on {on}: {why}")));
    }
    raw.extend(cert_alerts(&state.certificates, at));

    let mut seen = state.alerts_seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.retain(|id, _| raw.iter().any(|(i, ..)| i == id));
    let mut alerts: Vec<Alert> = raw
        .into_iter()
        .map(|(id, severity, summary, detail)| {
            let since = failed_since.get(&id).copied().unwrap_or_else(|| *seen.entry(id.clone()).or_insert(at));
            Alert { id, severity, summary, detail, since }
        })
        .collect();
    alerts.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.since.cmp(&b.since)).then(a.id.cmp(&b.id)));
    alerts
}

/// `GET /api/alerts`: any logged-in user may read them.
pub(crate) async fn list(State(state): State<AppState>, Caller(_who): Caller) -> ApiResult<Json<Vec<Alert>>> {
    Ok(Json(current(&state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(used: u64, objects: u64, quota_bytes: u64, quota_objects: u64) -> PoolInfo {
        PoolInfo {
            name: basalt_core::PoolName::new("p").expect("name"),
            id: 1,
            applications: vec!["rbd".into()],
            image_count: 1,
            provisioned_bytes: 0,
            used_bytes: used,
            objects,
            quota_max_bytes: quota_bytes,
            quota_max_objects: quota_objects,
            healthy: true,
        }
    }

    #[test]
    fn task_subjects_read_as_specs() {
        use serde_json::json;
        assert_eq!(subjects(&json!({"image_spec": "rbd/vm1"})), "rbd/vm1");
        assert_eq!(subjects(&json!({"image_id_spec": "rbd/0000000003"})), "rbd/0000000003");
        assert_eq!(subjects(&json!({"image_spec": "rbd/vm1", "snapshot_name": "s1"})), "rbd/vm1@s1");
        assert_eq!(subjects(&json!({"image_spec": "rbd/a", "dest_image_spec": "rbd/b"})), "rbd/a → rbd/b");
        assert_eq!(subjects(&json!({"pool": "rbd"})), r#"{"pool":"rbd"}"#);
    }

    #[test]
    fn pools_are_nearly_full_at_85_percent_and_full_at_95_of_either_quota() {
        let ids = |p: PoolInfo| pool_alerts(&[p]).into_iter().map(|(id, s, ..)| (id, s)).collect::<Vec<_>>();
        assert_eq!(ids(pool(84, 0, 100, 0)), []);
        assert_eq!(ids(pool(85, 0, 100, 0)), [("pool_near_full:p".to_owned(), Severity::Warning)]);
        assert_eq!(ids(pool(95, 0, 100, 0)), [("pool_full:p".to_owned(), Severity::Critical)]);
        assert_eq!(ids(pool(0, 9, 0, 10)), [("pool_near_full:p".to_owned(), Severity::Warning)]);
        assert_eq!(ids(pool(1 << 40, 1 << 20, 0, 0)), [], "no quota, no alert");
    }

    #[test]
    fn a_metadata_reserve_below_its_size_raises_a_warning() {
        let status = |held| basalt_engine::ReserveStatus { size: 64 << 20, held, releases: 2 };
        assert_eq!(reserve_alert(status(64 << 20)), None);
        let (id, severity, summary, detail) = reserve_alert(status(48 << 20)).expect("an alert");
        assert_eq!((id.as_str(), severity), ("metadata_reserve_low", Severity::Warning));
        assert_eq!(summary, "the metadata reserve is low (48 MiB of 64 MiB)");
        assert!(detail.contains("(2 time(s) since basalt started)") && detail.contains("ENOSPC"), "{detail}");
    }

    #[test]
    fn the_expiry_of_a_certificate_is_read_from_its_pem() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 5, 6);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(not_after(cert.pem().as_bytes()), Ok(1_935_792_000));
        assert!(not_after(b"not a certificate").is_err());
    }

    /// The expiry is read when the certificate is loaded, not per request: replacing or removing the file later
    /// changes nothing until a restart (the listeners still serve what they loaded).
    #[test]
    fn a_certificate_is_read_once_when_loaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 5, 6);
        let pem = dir.path().join("api.pem");
        std::fs::write(&pem, params.self_signed(&key).expect("cert").pem()).expect("write");
        let missing = dir.path().join("missing.pem");
        let certs = Certificates::load(vec![("API".to_owned(), pem.clone()), ("NBD CA".to_owned(), missing.clone())]);
        std::fs::remove_file(&pem).expect("remove");
        std::fs::write(&missing, b"written after the start").expect("write");
        let read: Vec<_> = expiries(&certs).map(|(what, _, end)| (what, end.is_ok())).collect();
        assert_eq!(read, [("API", true), ("NBD CA", false)]);
        assert_eq!(expiries(&certs).next().map(|(_, _, end)| end), Some(Ok(1_935_792_000)));
        // At the start of 2031 the API certificate, read at load, expires within the warning window.
        let alerts = cert_alerts(&certs, 1_935_792_000 - 10 * 86_400);
        let ids: Vec<_> = alerts.iter().map(|(id, severity, _, _)| (id.as_str(), *severity)).collect();
        assert_eq!(
            ids,
            [("certificate_expiring:API", Severity::Warning), ("certificate_expiring:NBD CA", Severity::Warning)]
        );
    }
}
