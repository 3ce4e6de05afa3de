//! Performance history: once a second the counters of every image are sampled into per-image series (an hour at
//! 1 s, a day at 60 s), served by `/api/perf/...`, and exported as Prometheus text at `/metrics` with Ceph's names.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use basalt_core::ImageSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Params;
use crate::auth::{Caller, Need};
use crate::datapath::{Registry, Sample};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Points kept at 1 s resolution (one hour).
pub const FINE_POINTS: usize = 3600;
/// Points kept at 60 s resolution (one day).
pub const COARSE_POINTS: usize = 1440;

#[derive(Debug, Default)]
struct Series {
    last: Option<Sample>,
    fine: VecDeque<(u64, Sample)>,
    coarse: VecDeque<(u64, Sample)>,
    minute: Option<(u64, Sample)>,
}

impl Series {
    fn push(&mut self, now: u64, current: Sample) {
        // Counters start at zero when an image is first opened, so the first sample is all new activity.
        let delta = current.since(&self.last.unwrap_or_default());
        self.last = Some(current);
        self.fine.push_back((now, delta));
        while self.fine.len() > FINE_POINTS {
            self.fine.pop_front();
        }
        let minute = now / 60 * 60;
        match &mut self.minute {
            Some((m, acc)) if *m == minute => acc.add(&delta),
            slot => {
                if let Some((m, acc)) = slot.take() {
                    self.coarse.push_back((m, acc));
                    while self.coarse.len() > COARSE_POINTS {
                        self.coarse.pop_front();
                    }
                }
                *slot = Some((minute, delta));
            }
        }
    }

    /// Adds a finished minute recorded elsewhere (the archive in the cluster).
    fn restore_minute(&mut self, minute: u64, delta: Sample) {
        let at = self.coarse.partition_point(|(m, _)| *m < minute);
        match self.coarse.get_mut(at) {
            Some((m, acc)) if *m == minute => acc.add(&delta),
            _ => self.coarse.insert(at, (minute, delta)),
        }
        while self.coarse.len() > COARSE_POINTS {
            self.coarse.pop_front();
        }
    }

    /// The finished minute starting at `minute`, if this series has it.
    fn minute_total(&self, minute: u64) -> Option<Sample> {
        self.coarse.iter().rev().find(|(m, _)| *m == minute).map(|(_, s)| *s)
    }

    /// Points since `from` at the given resolution (1 or 60 s), each a delta over its interval.
    fn points(&self, from: u64, resolution: u64) -> Vec<(u64, Sample)> {
        let source: Vec<(u64, Sample)> = if resolution == 1 {
            self.fine.iter().copied().collect()
        } else {
            self.coarse.iter().copied().chain(self.minute).collect()
        };
        source.into_iter().filter(|(t, _)| *t >= from).collect()
    }
}

/// Where counters come from: this server's data path, or another server's in front of the same cluster.
type Origin = String;

/// The origin of this server's own counters.
const LOCAL: &str = "";

/// The per-image history, per origin (this server and, on a shared cluster, the others).
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<HashMap<(Origin, String), Series>>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl History {
    /// Samples every image of the registry now; returns the cumulative counters it took.
    pub fn sample(&self, registry: &Registry, now: u64) -> ImageCounters {
        let counters: ImageCounters =
            registry.all().into_iter().map(|(key, stats)| (key, stats.counters.sample())).collect();
        self.record(LOCAL, now, &counters);
        counters
    }

    /// Records cumulative counters of `origin`'s images taken at `now`.
    pub fn record(&self, origin: &str, now: u64, counters: &[(String, Sample)]) {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, sample) in counters {
            series.entry((origin.to_owned(), key.clone())).or_default().push(now, *sample);
        }
    }

    /// This server's per-image totals of the finished minute starting at `minute` (images without activity left out).
    pub fn local_minute(&self, minute: u64) -> Vec<(String, Sample)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series
            .iter()
            .filter(|((origin, _), _)| origin == LOCAL)
            .filter_map(|((_, key), s)| s.minute_total(minute).map(|total| (key.clone(), total)))
            .filter(|(_, total)| total.read_ops + total.write_ops + total.bg_ops > 0)
            .collect()
    }

    /// Adds archived minutes (from before this server started) under their own origin.
    pub fn restore(&self, origin: &str, minute: u64, totals: &[(String, Sample)]) {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, total) in totals {
            series.entry((origin.to_owned(), key.clone())).or_default().restore_minute(minute, *total);
        }
    }

    /// Points of every origin matching `keep`, summed per timestamp.
    fn summed(&self, from: u64, resolution: u64, keep: impl Fn(&str) -> bool) -> Vec<(u64, Sample)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut sum: std::collections::BTreeMap<u64, Sample> = std::collections::BTreeMap::new();
        for ((_, key), s) in series.iter() {
            if keep(key) {
                for (t, sample) in s.points(from, resolution) {
                    sum.entry(t).or_default().add(&sample);
                }
            }
        }
        sum.into_iter().collect()
    }

    fn image_points(&self, key: &str, from: u64, resolution: u64) -> Vec<(u64, Sample)> {
        self.summed(from, resolution, |k| k == key)
    }

    fn overall_points(&self, from: u64, resolution: u64) -> Vec<(u64, Sample)> {
        self.summed(from, resolution, |_| true)
    }

    fn window_totals(&self, from: u64) -> Vec<(String, Sample, u64)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut totals: HashMap<String, (Sample, std::collections::BTreeSet<u64>)> = HashMap::new();
        for ((_, key), s) in series.iter() {
            let entry = totals.entry(key.clone()).or_default();
            for (t, p) in s.points(from, 1) {
                entry.0.add(&p);
                entry.1.insert(t);
            }
        }
        totals.into_iter().map(|(key, (total, seconds))| (key, total, seconds.len() as u64)).collect()
    }
}

/// Per-image cumulative counters.
pub type ImageCounters = Vec<(String, Sample)>;

/// One server's last publication.
#[derive(Debug, Clone)]
pub struct Published {
    /// The publishing server.
    pub server: String,
    /// When the counters were taken.
    pub taken: u64,
    /// The counters.
    pub counters: ImageCounters,
}

/// Counters shared between the servers in front of one cluster: each publishes its own cumulative per-image
/// counters and reads the others', so every server's history shows all the gateways' traffic.
pub trait PerfShare: Send + Sync + std::fmt::Debug {
    /// Publishes this server's counters, taken at `now`.
    fn publish(&self, server: &str, now: u64, counters: &[(String, Sample)]) -> basalt_core::Result<()>;
    /// Every server's last publication: (server, taken at, counters).
    fn fetch(&self) -> basalt_core::Result<Vec<Published>>;
    /// Forgets a server that stopped publishing.
    fn forget(&self, server: &str) -> basalt_core::Result<()>;
    /// Keeps `server`'s per-image totals of the finished minute starting at `minute`, and drops archived minutes
    /// before `keep_from`.
    fn archive(
        &self,
        server: &str,
        minute: u64,
        totals: &[(String, Sample)],
        keep_from: u64,
    ) -> basalt_core::Result<()>;
    /// Every archived minute from `since` on: (minute, server, per-image totals).
    fn archived(&self, since: u64) -> basalt_core::Result<Vec<(u64, String, ImageCounters)>>;
}

/// Loads the archived minutes before `now`'s minute, so a (re)started server's day view starts full.
pub fn restore_archive(share: &dyn PerfShare, history: &History, now: u64) {
    let this_minute = now / 60 * 60;
    let since = this_minute.saturating_sub(COARSE_POINTS as u64 * 60);
    match share.archived(since) {
        Ok(minutes) => {
            for (minute, server, totals) in minutes {
                if minute < this_minute {
                    history.restore(&format!("archive:{server}"), minute, &totals);
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the archived performance history"),
    }
}

/// A publication older than this is from a server that is gone: its counters no longer count.
const SHARE_STALE_SECS: u64 = 30;
/// A publication older than this is removed.
const SHARE_FORGET_SECS: u64 = 3600;

/// Archives this server's totals of the finished minute starting at `minute` (blocking: a RADOS round trip).
pub fn archive_minute(share: &dyn PerfShare, history: &History, server: &str, minute: u64) {
    let totals = history.local_minute(minute);
    // A day of minutes, this one included.
    let keep_from = minute.saturating_sub((COARSE_POINTS as u64 - 1) * 60);
    if let Err(err) = share.archive(server, minute, &totals, keep_from) {
        tracing::warn!(error = %err, "cannot archive performance history to the cluster");
    }
}

/// Publishes this server's counters (`local`, as sampled at `now`) and takes in the other servers' (blocking: RADOS
/// round trips).
pub fn exchange(share: &dyn PerfShare, history: &History, local: &[(String, Sample)], server: &str, now: u64) {
    if let Err(err) = share.publish(server, now, local) {
        tracing::warn!(error = %err, "cannot publish performance counters to the cluster");
        return;
    }
    let others = match share.fetch() {
        Ok(others) => others,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read other servers' performance counters");
            return;
        }
    };
    for Published { server: other, taken, counters } in others {
        if other == server {
            continue;
        }
        let age = now.saturating_sub(taken);
        if age > SHARE_FORGET_SECS {
            let _ = share.forget(&other);
        } else if age <= SHARE_STALE_SECS {
            // Attributed to the second it was taken, so the other server's activity lines up with ours.
            history.record(&other, taken, &counters);
        }
    }
}

/// Samples the registry into the history once a second until `stop`; with a `share`, also publishes this server's
/// counters (as `server`) and takes in the other servers'.
pub async fn run_sampler(
    registry: Arc<Registry>,
    history: Arc<History>,
    share: Option<(Arc<dyn PerfShare>, String)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The minutes before this one come from the archive; this server archives the ones it finishes from now on.
    let mut archived_up_to = now_secs() / 60 * 60;
    if let Some((share, _)) = &share {
        let (share, history) = (share.clone(), history.clone());
        let _ = tokio::task::spawn_blocking(move || restore_archive(&*share, &history, now_secs())).await;
    }
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = now_secs();
                let local = history.sample(&registry, now);
                if let Some((share, server)) = &share {
                    let finished = (now / 60 * 60).saturating_sub(60);
                    let archive = (finished >= archived_up_to).then_some(finished);
                    if archive.is_some() {
                        archived_up_to = finished + 60;
                    }
                    let (share, server, history) = (share.clone(), server.clone(), history.clone());
                    // A slow cluster delays the exchange, never the local sampling.
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(minute) = archive {
                            archive_minute(&*share, &history, &server, minute);
                        }
                        exchange(&*share, &history, &local, &server, now);
                    })
                    .await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn rates(t: u64, s: &Sample, seconds: u64) -> Value {
    let secs = seconds.max(1) as f64;
    let lat = |ns: u64, ops: u64| if ops == 0 { 0.0 } else { ns as f64 / ops as f64 / 1e6 };
    json!({
        "t": t,
        "read_iops": s.read_ops as f64 / secs,
        "write_iops": s.write_ops as f64 / secs,
        "read_bps": s.read_bytes as f64 / secs,
        "write_bps": s.write_bytes as f64 / secs,
        "read_latency_ms": lat(s.read_latency_ns, s.read_ops),
        "write_latency_ms": lat(s.write_latency_ns, s.write_ops),
        "background_read_bps": s.bg_read_bytes as f64 / secs,
        "background_write_bps": s.bg_write_bytes as f64 / secs,
        "background_iops": s.bg_ops as f64 / secs,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    /// Seconds back from now (default one hour, at most a day).
    range: Option<u64>,
}

fn window(range: Option<u64>) -> ApiResult<(u64, u64)> {
    let range = range.unwrap_or(3600);
    if range == 0 || range > 86_400 {
        return Err(ApiError::bad_request("range must be between 1 and 86400 seconds"));
    }
    let resolution = if range <= FINE_POINTS as u64 { 1 } else { 60 };
    Ok((now_secs().saturating_sub(range), resolution))
}

const RBD_READ: Need = Need { scope: "rbd-image", permission: "read" };

pub(crate) async fn image(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(spec): Path<String>,
    Params(query): Params<RangeQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let spec = ImageSpec::parse(&spec).map_err(ApiError::from)?;
    let (from, resolution) = window(query.range)?;
    let points = state.history.image_points(&spec.to_string(), from, resolution);
    Ok(Json(json!({
        "image": spec.to_string(),
        "resolution": resolution,
        "points": points.iter().map(|(t, s)| rates(*t, s, resolution)).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn overall(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<RangeQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let (from, resolution) = window(query.range)?;
    let points = state.history.overall_points(from, resolution);
    Ok(Json(json!({
        "resolution": resolution,
        "points": points.iter().map(|(t, s)| rates(*t, s, resolution)).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopQuery {
    /// `iops`, `throughput` or `latency`.
    by: Option<String>,
    /// How many images (default 10).
    limit: Option<usize>,
    /// Seconds to average over (default 60, at most an hour).
    window: Option<u64>,
}

pub(crate) async fn top(
    State(state): State<AppState>,
    Caller(who): Caller,
    Params(query): Params<TopQuery>,
) -> ApiResult<Json<Value>> {
    who.require(RBD_READ)?;
    let seconds = query.window.unwrap_or(60).clamp(1, FINE_POINTS as u64);
    let by = query.by.unwrap_or_else(|| "iops".into());
    let key = |s: &Sample| -> f64 {
        match by.as_str() {
            "throughput" => (s.read_bytes + s.write_bytes) as f64,
            "latency" => {
                let ops = s.read_ops + s.write_ops;
                if ops == 0 { 0.0 } else { (s.read_latency_ns + s.write_latency_ns) as f64 / ops as f64 }
            }
            _ => (s.read_ops + s.write_ops) as f64,
        }
    };
    if !["iops", "throughput", "latency"].contains(&by.as_str()) {
        return Err(ApiError::bad_request(format!("cannot rank by '{by}': use iops, throughput or latency")));
    }
    let mut rows = state.history.window_totals(now_secs().saturating_sub(seconds));
    rows.retain(|(_, s, _)| s.read_ops + s.write_ops > 0);
    rows.sort_by(|a, b| key(&b.1).total_cmp(&key(&a.1)));
    rows.truncate(query.limit.unwrap_or(10).min(64));
    Ok(Json(json!(
        rows.iter()
            .map(|(image, s, points)| {
                let mut v = rates(now_secs(), s, (*points).max(1));
                if let Some(map) = v.as_object_mut() {
                    map.insert("image".into(), json!(image));
                    map.remove("t");
                }
                v
            })
            .collect::<Vec<_>>()
    )))
}

/// A value as Ceph's exporter writes it: a Go-compatible float (`8.0`, `1.5e+20`, `NaN`).
pub(crate) fn floatstr(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if value.fract() != 0.0 {
        format!("{value}")
    } else if value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value:e}").replace('e', "e+")
    }
}

/// A label value escaped for the text format (backslash, double quote, line feed).
pub(crate) fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family in the text format: `# HELP`, `# TYPE`, then one line per label set.
pub(crate) fn family(out: &mut String, name: &str, help: &str, kind: &str, rows: &[(String, f64)]) {
    let _ = write!(out, "\n# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = write!(out, "\n{name} {}", floatstr(*value));
        } else {
            let _ = write!(out, "\n{name}{{{labels}}} {}", floatstr(*value));
        }
    }
}

/// [`family`] with one series and no labels.
pub(crate) fn single(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    family(out, name, help, kind, &[(String::new(), value)]);
}

/// The label set of Ceph's per-image series: `pool`, `namespace` (empty for the default one), `image`.
pub(crate) fn image_labels(key: &str) -> String {
    match ImageSpec::parse(key) {
        Ok(spec) => format!(
            "pool=\"{}\",namespace=\"{}\",image=\"{}\"",
            label_value(spec.pool().as_str()),
            label_value(spec.namespace().as_str()),
            label_value(spec.image.as_str())
        ),
        Err(_) => format!("pool=\"\",namespace=\"\",image=\"{}\"", label_value(key)),
    }
}

/// The per-image families as Ceph's mgr `prometheus` module writes them (`rbd_stats_pools`): the same names, order,
/// `# HELP` texts, types and label set, with the latency sums in nanoseconds.
pub(crate) fn rbd_families(out: &mut String, images: &[(String, Sample)]) {
    type Value = fn(&Sample) -> u64;
    let families: [(&str, &str, Value); 8] = [
        ("ceph_rbd_write_ops", "RBD image writes count", |s| s.write_ops),
        ("ceph_rbd_read_ops", "RBD image reads count", |s| s.read_ops),
        ("ceph_rbd_write_bytes", "RBD image bytes written", |s| s.write_bytes),
        ("ceph_rbd_read_bytes", "RBD image bytes read", |s| s.read_bytes),
        ("ceph_rbd_write_latency_sum", "RBD image writes latency (msec) Total", |s| s.write_latency_ns),
        ("ceph_rbd_write_latency_count", "RBD image writes latency (msec) Count", |s| s.write_ops),
        ("ceph_rbd_read_latency_sum", "RBD image reads latency (msec) Total", |s| s.read_latency_ns),
        ("ceph_rbd_read_latency_count", "RBD image reads latency (msec) Count", |s| s.read_ops),
    ];
    let labelled: Vec<(String, &Sample)> = images.iter().map(|(key, s)| (image_labels(key), s)).collect();
    for (name, help, value) in families {
        let rows: Vec<(String, f64)> = labelled.iter().map(|(l, s)| (l.clone(), value(s) as f64)).collect();
        family(out, name, help, "counter", &rows);
    }
}

/// basalt's own per-image families, in the same style: background task I/O (copy, deep copy, flatten), which the
/// `ceph_rbd_*` client counters leave out.
pub(crate) fn background_families(out: &mut String, images: &[(String, Sample)]) {
    type Value = fn(&Sample) -> u64;
    let families: [(&str, &str, Value); 3] = [
        ("basalt_rbd_background_read_bytes", "Bytes background tasks read", |s| s.bg_read_bytes),
        ("basalt_rbd_background_write_bytes", "Bytes background tasks wrote", |s| s.bg_write_bytes),
        ("basalt_rbd_background_ops", "Background task operations (one per object moved)", |s| s.bg_ops),
    ];
    for (name, help, value) in families {
        let rows: Vec<(String, f64)> = images.iter().map(|(k, s)| (image_labels(k), value(s) as f64)).collect();
        family(out, name, help, "counter", &rows);
    }
}

/// `basalt_image_status`: one series per image and status (`OK`, `degraded`, `migrating`), 1 for the image's
/// status and 0 for the others, for every image the server knows something of (see [`crate::status`]).
fn image_status_family(out: &mut String, ctx: &crate::status::StatusCtx) {
    let mut rows = Vec::new();
    for key in ctx.known_images() {
        let status = ctx.known(&key).status;
        for candidate in
            [basalt_core::ImageStatus::Ok, basalt_core::ImageStatus::Degraded, basalt_core::ImageStatus::Migrating]
        {
            let value = if candidate == status { 1.0 } else { 0.0 };
            rows.push((format!("{},status=\"{}\"", image_labels(&key), candidate.as_str()), value));
        }
    }
    family(
        out,
        "basalt_image_status",
        "Image status (1 for the current one): OK, degraded or migrating",
        "gauge",
        &rows,
    );
}

/// Prometheus text at `/metrics`: Ceph's per-image series (`ceph_rbd_*`), then basalt's own (`basalt_*`).
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut images: Vec<(String, Sample)> =
        state.registry.all().into_iter().map(|(k, v)| (k, v.counters.sample())).collect();
    images.sort_by(|a, b| a.0.cmp(&b.0));
    rbd_families(&mut out, &images);
    background_families(&mut out, &images);
    if let Some(snapshot) = state.capacity.last() {
        snapshot.write_metrics(&mut out);
    }
    let (running, finished) = state.tasks.list();
    image_status_family(&mut out, &crate::status::StatusCtx::new(state.registry.clone(), running.clone()));
    crate::alerts::write_metrics(&state, &finished, &mut out);
    family(&mut out, "basalt_up", "The server is up (1)", "gauge", &[(String::new(), 1.0)]);
    family(
        &mut out,
        "basalt_tasks_running",
        "Background tasks running",
        "gauge",
        &[(String::new(), running.len() as f64)],
    );
    family(
        &mut out,
        "basalt_images_tracked",
        "Images with data-path counters (opened since the server started)",
        "gauge",
        &[(String::new(), images.len() as f64)],
    );
    out.push('\n');
    let body = out.trim_start().to_owned();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_labels_are_written_as_cephs_exporter_writes_them() {
        assert_eq!(floatstr(8.0), "8.0");
        assert_eq!(floatstr(0.25), "0.25");
        assert_eq!(floatstr(1.5e20), "1.5e+20");
        assert_eq!(floatstr(f64::NAN), "NaN");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        let busy = Sample { write_ops: 2, write_bytes: 8192, write_latency_ns: 92_000, ..Sample::default() };
        rbd_families(&mut out, &[("rbd/tenant/vm".to_owned(), busy)]);
        let text = out.trim_start();
        assert!(text.starts_with(
            "# HELP ceph_rbd_write_ops RBD image writes count\n# TYPE ceph_rbd_write_ops counter\n\
             ceph_rbd_write_ops{pool=\"rbd\",namespace=\"tenant\",image=\"vm\"} 2.0\n"
        ));
        assert!(text.contains(
            "# HELP ceph_rbd_write_latency_sum RBD image writes latency (msec) Total\n\
             # TYPE ceph_rbd_write_latency_sum counter\n\
             ceph_rbd_write_latency_sum{pool=\"rbd\",namespace=\"tenant\",image=\"vm\"} 92000.0\n"
        ));
        assert!(text.contains("ceph_rbd_write_latency_count{pool=\"rbd\",namespace=\"tenant\",image=\"vm\"} 2.0"));
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(
            names,
            [
                "ceph_rbd_write_ops counter",
                "ceph_rbd_read_ops counter",
                "ceph_rbd_write_bytes counter",
                "ceph_rbd_read_bytes counter",
                "ceph_rbd_write_latency_sum counter",
                "ceph_rbd_write_latency_count counter",
                "ceph_rbd_read_latency_sum counter",
                "ceph_rbd_read_latency_count counter",
            ]
        );
    }

    #[test]
    fn series_keep_deltas_at_two_resolutions() {
        let mut series = Series::default();
        let mut total = Sample::default();
        for t in 0..180u64 {
            total.write_ops += 10;
            series.push(1_000_020 + t, total);
        }
        let fine = series.points(0, 1);
        assert_eq!(fine.len(), 180);
        assert!(fine.iter().all(|(_, s)| s.write_ops == 10), "counters start at zero, so every delta is 10");
        let coarse = series.points(0, 60);
        assert_eq!(coarse.iter().map(|(_, s)| s.write_ops).sum::<u64>(), 1800);
        assert!(coarse.iter().all(|(t, _)| t % 60 == 0));
    }

    /// Publications in memory, as the cluster's omap objects hold them.
    #[derive(Debug, Default)]
    struct MemoryShare {
        published: Mutex<HashMap<String, (u64, ImageCounters)>>,
        archive: Mutex<std::collections::BTreeMap<(u64, String), ImageCounters>>,
    }

    impl PerfShare for MemoryShare {
        fn publish(&self, server: &str, now: u64, counters: &[(String, Sample)]) -> basalt_core::Result<()> {
            self.published.lock().expect("lock").insert(server.to_owned(), (now, counters.to_vec()));
            Ok(())
        }
        fn fetch(&self) -> basalt_core::Result<Vec<Published>> {
            let published = self.published.lock().expect("lock");
            Ok(published
                .iter()
                .map(|(k, (t, c))| Published { server: k.clone(), taken: *t, counters: c.clone() })
                .collect())
        }
        fn forget(&self, server: &str) -> basalt_core::Result<()> {
            self.published.lock().expect("lock").remove(server);
            Ok(())
        }
        fn archive(
            &self,
            server: &str,
            minute: u64,
            totals: &[(String, Sample)],
            keep_from: u64,
        ) -> basalt_core::Result<()> {
            let mut archive = self.archive.lock().expect("lock");
            if !totals.is_empty() {
                archive.insert((minute, server.to_owned()), totals.to_vec());
            }
            archive.retain(|(m, _), _| *m >= keep_from);
            Ok(())
        }
        fn archived(&self, since: u64) -> basalt_core::Result<Vec<(u64, String, ImageCounters)>> {
            let archive = self.archive.lock().expect("lock");
            Ok(archive.iter().filter(|((m, _), _)| *m >= since).map(|((m, s), t)| (*m, s.clone(), t.clone())).collect())
        }
    }

    #[test]
    fn finished_minutes_are_archived_and_a_restarted_server_loads_them() {
        let share = MemoryShare::default();
        let history = History::default();
        let t0 = 1_000_040; // 20 s into a minute
        // Into the third minute, so the second one is finished.
        for i in 0..110u64 {
            history.record(LOCAL, t0 + i, &[("rbd/vm".to_owned(), writes(10 * (i + 1)))]);
        }
        let first_minute = t0 / 60 * 60;
        archive_minute(&share, &history, "a", first_minute);
        archive_minute(&share, &history, "a", first_minute + 60);
        let archived = share.archived(0).expect("archived");
        assert_eq!(archived.len(), 2);
        assert_eq!(archived[0].2, [("rbd/vm".to_owned(), writes(400))], "40 s of the first minute");
        assert_eq!(archived[1].2, [("rbd/vm".to_owned(), writes(600))]);

        // A new server process (or this one restarted) starts with the archived minutes in its day view.
        let restarted = History::default();
        restore_archive(&share, &restarted, first_minute + 180);
        let day = restarted.image_points("rbd/vm", 0, 60);
        assert_eq!(day, [(first_minute, writes(400)), (first_minute + 60, writes(600))]);
        // Minutes older than a day are dropped from the archive.
        archive_minute(&share, &history, "a", first_minute + 60 + COARSE_POINTS as u64 * 60);
        assert!(share.archived(0).expect("archived").iter().all(|(m, _, _)| *m > first_minute + 60));
    }

    fn writes(ops: u64) -> Sample {
        Sample { write_ops: ops, write_bytes: ops * 4096, ..Sample::default() }
    }

    #[test]
    fn every_server_sees_the_traffic_of_the_others_and_forgets_the_gone() {
        let share = MemoryShare::default();
        let (history_a, history_b) = (History::default(), History::default());
        let t0 = 1_000_000;
        // Server B's gateway wrote to rbd/vm; server A's own registry is idle.
        for (i, total) in [(0u64, 100u64), (1, 250), (2, 400)] {
            share.publish("b", t0 + i, &[("rbd/vm".to_owned(), writes(total))]).expect("publish");
            history_b.record(LOCAL, t0 + i, &[("rbd/vm".to_owned(), writes(total))]);
            exchange(&share, &history_a, &[], "a", t0 + i);
        }
        let seen_by_a: Vec<u64> = history_a.image_points("rbd/vm", 0, 1).iter().map(|(_, s)| s.write_ops).collect();
        let seen_by_b: Vec<u64> = history_b.image_points("rbd/vm", 0, 1).iter().map(|(_, s)| s.write_ops).collect();
        assert_eq!(seen_by_a, seen_by_b);
        assert_eq!(seen_by_a, [100, 150, 150]);
        assert_eq!(history_a.overall_points(0, 1).last().map(|(_, s)| s.write_bytes), Some(150 * 4096));
        // A's own traffic on the same image adds up with B's in A's view.
        history_a.record(LOCAL, t0 + 2, &[("rbd/vm".to_owned(), writes(7))]);
        assert_eq!(history_a.image_points("rbd/vm", t0 + 2, 1), [(t0 + 2, writes(157))]);
        let top = history_a.window_totals(0);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].1.write_ops, top[0].2), (407, 3));

        // A server silent for over an hour is removed; one silent for a minute no longer counts.
        exchange(&share, &history_a, &[], "a", t0 + 2 + SHARE_FORGET_SECS + 1);
        assert!(!share.published.lock().expect("lock").contains_key("b"));
        assert!(share.published.lock().expect("lock").contains_key("a"), "a published itself");
    }
}
