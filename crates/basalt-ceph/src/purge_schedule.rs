//! Trash purge schedules on a cluster are the manager's (`rbd_support` module, always on since Ceph 15): basalt
//! sends the same manager commands as `rbd trash purge schedule ...` and reads their JSON answers, so the cluster
//! runs exactly the schedules its operators see, and basalt runs none of its own. This part is pure (no librados):
//! the commands it builds and the answers it reads.

use basalt_core::{
    Error, ErrorKind, Namespace, PoolName, PoolNs, Result, ScheduleInterval, ScheduleItem, ScheduleLevel,
    ScheduleStartTime, ScheduledPurge, Timestamp, TrashPurgeSchedule,
};
use serde_json::{Value, json};

/// The manager's name of a level: `""`, `pool/`, `pool//` (the default namespace) or `pool/namespace/` (what `rbd`
/// sends as `level_spec`).
pub fn level_spec(level: &ScheduleLevel) -> String {
    match (&level.pool, &level.namespace) {
        (None, _) => String::new(),
        (Some(pool), None) => format!("{pool}/"),
        (Some(pool), Some(ns)) => format!("{pool}/{ns}/"),
    }
}

/// The level a manager name stands for (`""`, `pool/`, `pool/ns/`); image levels (mirror snapshots) are `None`.
pub fn parse_level_spec(name: &str) -> Option<ScheduleLevel> {
    if name.is_empty() {
        return Some(ScheduleLevel::global());
    }
    let inner = name.strip_suffix('/')?;
    let (pool, namespace) = match inner.split_once('/') {
        None => (inner, None),
        Some((pool, "")) => (pool, Some(Namespace::default_ns())),
        Some((pool, ns)) if !ns.contains('/') => (pool, Some(Namespace::new(ns).ok()?)),
        Some(_) => return None,
    };
    Some(ScheduleLevel { pool: Some(PoolName::new(pool).ok()?), namespace })
}

/// The JSON of one schedule command (`add`, `remove`, `list`, `status`).
pub fn command(verb: &str, level: &ScheduleLevel, item: Option<&ScheduleItem>) -> String {
    let mut command = json!({
        "prefix": format!("rbd trash purge schedule {verb}"),
        "level_spec": level_spec(level),
    });
    if let Some(item) = item {
        command["interval"] = json!(item.interval.to_string());
        if let Some(start) = item.start_time {
            // A time without a zone: the manager runs in UTC, as basalt keeps start times.
            command["start_time"] = json!(format!("{:02}:{:02}", start.minutes() / 60, start.minutes() % 60));
        }
    }
    command.to_string()
}

fn bad_answer(what: &str, text: &str) -> Error {
    Error::new(ErrorKind::Io, format!("unexpected answer from the manager to {what}: {}", text.trim()))
}

/// Reads the answer to `list`: `{"<level id>": {"name": "rbd/", "schedule": [{"interval": "1d", "start_time":
/// null}]}, ...}`. Levels basalt does not model (images) are left out.
pub fn parse_list(text: &str) -> Result<Vec<TrashPurgeSchedule>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root: Value = serde_json::from_str(text).map_err(|_| bad_answer("schedule list", text))?;
    let entries = root.as_object().ok_or_else(|| bad_answer("schedule list", text))?;
    let mut out = Vec::new();
    for entry in entries.values() {
        let name = entry["name"].as_str().ok_or_else(|| bad_answer("schedule list", text))?;
        let Some(level) = parse_level_spec(name) else { continue };
        let mut items = Vec::new();
        for item in entry["schedule"].as_array().ok_or_else(|| bad_answer("schedule list", text))? {
            let interval = item["interval"].as_str().ok_or_else(|| bad_answer("schedule list", text))?;
            let interval = ScheduleInterval::parse(interval)?;
            let start_time = match item["start_time"].as_str() {
                None | Some("") => None,
                Some(start) => Some(ScheduleStartTime::parse(start)?),
            };
            items.push(ScheduleItem { interval, start_time });
        }
        items.sort();
        out.push(TrashPurgeSchedule { level, items });
    }
    out.sort_by(|a, b| a.level.cmp(&b.level));
    Ok(out)
}

/// Reads the answer to `status`: `{"scheduled": [{"schedule_time": "2026-12-02 21:00:00", "pool_name": "rbd",
/// "namespace": "", ...}]}`; times are the manager's clock, taken as UTC.
pub fn parse_status(text: &str) -> Result<Vec<ScheduledPurge>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root: Value = serde_json::from_str(text).map_err(|_| bad_answer("schedule status", text))?;
    let scheduled = root["scheduled"].as_array().ok_or_else(|| bad_answer("schedule status", text))?;
    let mut out = Vec::new();
    for item in scheduled {
        let (Some(pool), Some(ns), Some(time)) =
            (item["pool_name"].as_str(), item["namespace"].as_str(), item["schedule_time"].as_str())
        else {
            return Err(bad_answer("schedule status", text));
        };
        let namespace = if ns.is_empty() { Namespace::default_ns() } else { Namespace::new(ns)? };
        let secs = basalt_core::time::parse_time(time).map_err(|_| bad_answer("schedule status", text))?;
        out.push(ScheduledPurge {
            location: PoolNs::new(PoolName::new(pool)?, namespace),
            next_run: Timestamp(u64::try_from(secs).unwrap_or(0)),
        });
    }
    out.sort_by(|a, b| (&a.location.pool, &a.location.namespace).cmp(&(&b.location.pool, &b.location.namespace)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_levels_as_the_rbd_tool() {
        let ns = ScheduleLevel::parse("rbd/tenant").expect("valid in the test");
        let item = ScheduleItem {
            interval: ScheduleInterval::parse("12h").expect("valid in the test"),
            start_time: Some(ScheduleStartTime::parse("02:30").expect("valid in the test")),
        };
        let sent: Value = serde_json::from_str(&command("add", &ns, Some(&item))).expect("valid in the test");
        assert_eq!(
            sent,
            json!({"prefix": "rbd trash purge schedule add", "level_spec": "rbd/tenant/", "interval": "12h",
                   "start_time": "02:30"})
        );
        let sent: Value =
            serde_json::from_str(&command("list", &ScheduleLevel::global(), None)).expect("valid in the test");
        assert_eq!(sent, json!({"prefix": "rbd trash purge schedule list", "level_spec": ""}));
        for level in ["", "rbd/", "rbd//", "rbd/tenant/"] {
            assert_eq!(level_spec(&parse_level_spec(level).expect("valid in the test")), level);
        }
        assert_eq!(parse_level_spec("rbd/image"), None);
    }

    #[test]
    fn answers_are_read() {
        let list = r#"{"2": {"name": "rbd/", "schedule": [{"interval": "1d", "start_time": "14:00:00"},
                       {"interval": "30m", "start_time": null}]},
                       "2/t": {"name": "rbd/t/", "schedule": [{"interval": "2h", "start_time": null}]}}"#;
        let schedules = parse_list(list).expect("valid in the test");
        assert_eq!(schedules.len(), 2);
        assert_eq!(schedules[0].level, ScheduleLevel::parse("rbd").expect("valid in the test"));
        assert_eq!(
            schedules[0].items.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["every 30m", "every 1d starting at 14:00:00"]
        );
        assert_eq!(schedules[1].level, ScheduleLevel::parse("rbd/t").expect("valid in the test"));
        let status = r#"{"scheduled": [{"schedule_time": "2026-12-02 21:00:00", "pool_id": "2", "pool_name": "rbd",
                         "namespace": ""}]}"#;
        let status = parse_status(status).expect("valid in the test");
        assert_eq!(status[0].location.to_string(), "rbd");
        assert_eq!(status[0].next_run.to_string(), "2026-12-02T21:00:00Z");
        assert!(parse_list("[1]").is_err());
        assert!(parse_status("{}").is_err());
    }
}
