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

/// The per-image history.
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<HashMap<String, Series>>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl History {
    /// Samples every image of the registry now.
    pub fn sample(&self, registry: &Registry, now: u64) {
        let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, stats) in registry.all() {
            series.entry(key).or_default().push(now, stats.counters.sample());
        }
    }

    fn image_points(&self, key: &str, from: u64, resolution: u64) -> Vec<(u64, Sample)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series.get(key).map(|s| s.points(from, resolution)).unwrap_or_default()
    }

    fn overall_points(&self, from: u64, resolution: u64) -> Vec<(u64, Sample)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut sum: std::collections::BTreeMap<u64, Sample> = std::collections::BTreeMap::new();
        for s in series.values() {
            for (t, sample) in s.points(from, resolution) {
                sum.entry(t).or_default().add(&sample);
            }
        }
        sum.into_iter().collect()
    }

    fn window_totals(&self, from: u64) -> Vec<(String, Sample, u64)> {
        let series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        series
            .iter()
            .map(|(k, s)| {
                let points = s.points(from, 1);
                let mut total = Sample::default();
                for (_, p) in &points {
                    total.add(p);
                }
                (k.clone(), total, points.len() as u64)
            })
            .collect()
    }
}

/// Samples the registry into the history once a second until `stop`.
pub async fn run_sampler(registry: Arc<Registry>, history: Arc<History>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => history.sample(&registry, now_secs()),
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

/// Prometheus text with Ceph's per-image series (`ceph_rbd_*` with pool, namespace, image labels).
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    type Family = (&'static str, &'static str, fn(&Sample) -> f64);
    let families: [Family; 6] = [
        ("ceph_rbd_write_ops", "RBD image writes count", |s| s.write_ops as f64),
        ("ceph_rbd_read_ops", "RBD image reads count", |s| s.read_ops as f64),
        ("ceph_rbd_write_bytes", "RBD image bytes written", |s| s.write_bytes as f64),
        ("ceph_rbd_read_bytes", "RBD image bytes read", |s| s.read_bytes as f64),
        ("ceph_rbd_write_latency_sum", "RBD image writes latency, seconds", |s| s.write_latency_ns as f64 / 1e9),
        ("ceph_rbd_read_latency_sum", "RBD image reads latency, seconds", |s| s.read_latency_ns as f64 / 1e9),
    ];
    let images: Vec<(String, Sample)> =
        state.registry.all().into_iter().map(|(k, v)| (k, v.counters.sample())).collect();
    let labels = |key: &str| -> String {
        let spec = ImageSpec::parse(key).ok();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        match spec {
            Some(spec) => format!(
                "pool=\"{}\",namespace=\"{}\",image=\"{}\"",
                esc(spec.pool().as_str()),
                esc(spec.namespace().as_str()),
                esc(spec.image.as_str())
            ),
            None => format!("image=\"{}\"", esc(key)),
        }
    };
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (key, sample) in &images {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), value(sample));
        }
    }
    for (name, ops) in [("ceph_rbd_write_latency_count", true), ("ceph_rbd_read_latency_count", false)] {
        let _ = writeln!(out, "# HELP {name} RBD image operations timed\n# TYPE {name} counter");
        for (key, s) in &images {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), if ops { s.write_ops } else { s.read_ops });
        }
    }
    let (running, _) = state.tasks.list();
    let _ = writeln!(out, "# HELP basalt_up The server is up\n# TYPE basalt_up gauge\nbasalt_up 1");
    let _ = writeln!(out, "# HELP basalt_tasks_running Background tasks running\n# TYPE basalt_tasks_running gauge");
    let _ = writeln!(out, "basalt_tasks_running {}", running.len());
    let _ = writeln!(
        out,
        "# HELP basalt_images_tracked Images with data-path statistics\n# TYPE basalt_images_tracked gauge"
    );
    let _ = writeln!(out, "basalt_images_tracked {}", images.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
