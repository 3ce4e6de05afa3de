//! Trash commands: `trash mv [--expires-at]`, `ls [-l]`, `restore`, `rm [--force]`, `purge`, and
//! `purge schedule add|remove|ls|status` (as `rbd trash purge schedule`).

use anyhow::Result;
use basalt_core::{DEFAULT_POOL, PoolName, PoolNs};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::TrashCommand;
use super::api::{Api, TrashEntry, decode, image_path};
use super::error::{Failure, exit_code_of};
use super::http::{encode_segment, query};
use super::output::{Align, Format, Table, now_secs, parse_time, print_json, print_text, rfc3339, show_time};
use super::spec::trash_id;

/// When a trashed image may be removed, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expiry {
    /// Seconds from now (`{"delay": n}`): immune to clock differences between client and server.
    Delay(u64),
    /// An absolute time in Unix seconds (`{"expires_at": RFC 3339}`).
    At(i64),
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    })
}

/// Parses `N unit` (`2 hours`, `30m`, `90`: seconds) to seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit = if unit.trim().is_empty() { 1 } else { unit_seconds(unit)? };
    n.checked_mul(unit)
}

/// Parses `--expires-at`: `now`, `now + 2 hours`, `+30m`, Unix seconds, `YYYY-MM-DD[ HH:MM:SS]` (UTC) or RFC 3339.
fn parse_expiry(text: &str) -> Result<Expiry, Failure> {
    let t = text.trim();
    let bad = |why: String| {
        Failure::invalid(format!(
            "invalid --expires-at '{text}': {why} (use 'YYYY-MM-DD HH:MM:SS' in UTC, RFC 3339, or 'now + 2 hours')"
        ))
    };
    if let Some(rest) = t.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(Expiry::Delay(0));
        }
        let Some(offset) = rest.strip_prefix('+') else {
            return Err(bad("only 'now + DURATION' is understood".into()));
        };
        return parse_duration(offset)
            .map(Expiry::Delay)
            .ok_or_else(|| bad(format!("bad duration '{}'", offset.trim())));
    }
    if let Some(offset) = t.strip_prefix('+') {
        return parse_duration(offset)
            .map(Expiry::Delay)
            .ok_or_else(|| bad(format!("bad duration '{}'", offset.trim())));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Expiry::At).map_err(|_| bad("number too large".into()));
    }
    parse_time(t).map(Expiry::At).map_err(bad)
}

fn entry_path(location: &PoolNs, id: &str) -> String {
    format!("/api/block/image/trash/{}", encode_segment(&format!("{location}/{id}")))
}

/// Runs a `trash` subcommand.
pub fn run(api: &Api, command: &TrashCommand) -> Result<()> {
    match command {
        TrashCommand::Mv(a) => {
            let spec = a.image.image_spec()?;
            let body = match a.expires_at.as_deref().map(parse_expiry).transpose()? {
                None => json!({}),
                Some(Expiry::Delay(secs)) => json!({ "delay": secs }),
                Some(Expiry::At(at)) => json!({ "expires_at": rfc3339(at) }),
            };
            api.call("POST", &format!("{}/move_trash", image_path(&spec)), Some(&body))?;
            Ok(())
        }
        TrashCommand::Ls(a) => ls(api, &a.location.pool_ns()?, a.long, a.format),
        TrashCommand::Restore(a) => {
            let (location, id) = trash_id(&a.id.spec, &a.id.image_id, &a.id.pool, &a.id.namespace)?;
            let body = match a.image.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => {
                    basalt_core::ImageName::new(name).map_err(|e| Failure::core(&e))?;
                    json!({ "new_image_name": name })
                }
                None => json!({}),
            };
            api.call("POST", &format!("{}/restore", entry_path(&location, &id)), Some(&body))?;
            Ok(())
        }
        TrashCommand::Rm(a) => {
            let (location, id) = trash_id(&a.id.spec, &a.id.image_id, &a.id.pool, &a.id.namespace)?;
            let force = if a.force { query(&[("force", "true")]) } else { String::new() };
            api.long_call("DELETE", &format!("{}{force}", entry_path(&location, &id)), None, "Removing image")?;
            Ok(())
        }
        TrashCommand::Purge(a) if a.schedule.is_some() => {
            if a.pool_spec.is_some() || a.pool.is_some() {
                return Err(Failure::invalid("give the pool after 'schedule ...' (-p POOL)").into());
            }
            let Some(PurgeSubcommand::Schedule { command }) = &a.schedule else { unreachable!("checked above") };
            schedule(api, command)
        }
        TrashCommand::Purge(a) => {
            let pool = match (a.pool_spec.as_deref(), a.pool.as_deref()) {
                (Some(p), Some(q)) if p != q => {
                    return Err(Failure::invalid(format!("the pool is given twice: '{p}' and --pool '{q}'")).into());
                }
                (Some(p), _) | (None, Some(p)) => p,
                (None, None) => DEFAULT_POOL,
            };
            let pool = PoolName::new(pool).map_err(|e| Failure::core(&e))?;
            let path = format!("/api/block/image/trash/purge{}", query(&[("pool_name", pool.as_str())]));
            let answer = api.long_call("POST", &path, None, "Removing images")?;
            check_purge(&answer)
        }
    }
}

/// Fails when the purge left expired entries behind, as rbd does ("some expired images could not be removed").
fn check_purge(answer: &Value) -> Result<()> {
    // A synchronous answer is the report itself; a finished task carries it as its `ret_value`.
    let report = if answer.get("skipped").is_some() { Some(answer) } else { answer.get("ret_value") };
    let Some(skipped) = report.and_then(|r| r.get("skipped")).and_then(Value::as_array) else {
        return Ok(());
    };
    if skipped.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| {
            let id = s.get("id").and_then(Value::as_str).unwrap_or("?");
            let detail = s.get("detail").and_then(Value::as_str).unwrap_or("not removed");
            format!("{id}: {detail}")
        })
        .collect();
    let code = skipped.first().and_then(|s| s.get("code")).and_then(Value::as_str).unwrap_or("EBUSY");
    Err(Failure::new(exit_code_of(code), format!("some expired images could not be removed: {}", reasons.join("; ")))
        .into())
}

fn ls(api: &Api, location: &PoolNs, long: bool, format: Format) -> Result<()> {
    // An empty namespace asks for the default one only (absent would mean every namespace of the pool).
    let pairs = [("pool_name", location.pool.as_str()), ("namespace", location.namespace.as_str())];
    let path = format!("/api/block/image/trash{}", query(&pairs));
    let raw = api.get_value(&path)?;
    let Some(groups) = raw.as_array() else {
        return Err(Failure::new(1, format!("unexpected answer from the server for {path}: expected a list")).into());
    };
    // Flatten the per-pool groups, keeping only the asked-for pool and namespace.
    let mut entries_raw: Vec<Value> = Vec::new();
    for group in groups {
        for entry in group.get("value").and_then(Value::as_array).cloned().unwrap_or_default() {
            let pool = entry.get("pool_name").and_then(Value::as_str);
            let ns = entry.get("namespace").and_then(Value::as_str).unwrap_or_default();
            if pool == Some(location.pool.as_str()) && ns == location.namespace.as_str() {
                entries_raw.push(entry);
            }
        }
    }
    if format == Format::Json {
        return print_json(&Value::Array(entries_raw));
    }
    let entries: Vec<TrashEntry> = decode(Value::Array(entries_raw), &path)?;
    if !long {
        let text: String = entries.iter().map(|e| format!("{} {}\n", e.id, e.name)).collect();
        return print_text(&text);
    }
    if entries.is_empty() {
        return Ok(());
    }
    let now = now_secs();
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("SOURCE", Align::Left),
        ("DELETED_AT", Align::Left),
        ("STATUS", Align::Left),
    ]);
    for e in &entries {
        let end = e.deferment_end_time.as_deref();
        let status = if e.status.as_deref() == Some("purging") {
            "purging".to_owned()
        } else {
            match end.map(parse_time) {
                Some(Ok(t)) if t > now => format!("protected until {}", show_time(end)),
                Some(_) => format!("expired at {}", show_time(end)),
                None => String::new(),
            }
        };
        table.row(vec![
            e.id.clone(),
            e.name.clone(),
            e.source.clone().unwrap_or_else(|| "USER".into()),
            show_time(e.deletion_time.as_deref()),
            status,
        ]);
    }
    table.print()
}

/// `trash purge schedule ...`.
#[derive(Subcommand, Debug)]
pub(super) enum PurgeSubcommand {
    /// Trash purge schedules: expired entries of a pool or namespace are purged at each scheduled time
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum ScheduleCommand {
    /// Add a trash purge schedule: add [-p POOL] [--namespace NS] INTERVAL [START_TIME]
    Add(ScheduleAddArgs),
    /// Remove a trash purge schedule (all of the level's without an interval)
    #[command(visible_alias = "rm")]
    Remove(ScheduleRemoveArgs),
    /// List trash purge schedules
    #[command(visible_alias = "list")]
    Ls(ScheduleLsArgs),
    /// Show when the scheduled purges run next
    Status(ScheduleStatusArgs),
}

/// Where a schedule applies: no pool is every pool; a namespace without a pool is in pool rbd.
#[derive(Args, Debug)]
pub(super) struct ScheduleLevelArgs {
    /// Pool
    #[arg(short = 'p', long, value_name = "POOL")]
    pool: Option<String>,
    /// Namespace
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct ScheduleAddArgs {
    #[command(flatten)]
    level: ScheduleLevelArgs,
    /// Schedule interval: 30m, 12h, 1d
    interval: String,
    /// Schedule start time (time of day, UTC unless an offset is given): 14:00, 02:30+02:00
    start_time: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct ScheduleRemoveArgs {
    #[command(flatten)]
    level: ScheduleLevelArgs,
    /// Schedule interval (without it, the level's whole schedule is removed)
    interval: Option<String>,
    /// Schedule start time
    start_time: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct ScheduleLsArgs {
    #[command(flatten)]
    level: ScheduleLevelArgs,
    /// List all schedules: the level's, the one above it that applies, and those below it
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args, Debug)]
pub(super) struct ScheduleStatusArgs {
    #[command(flatten)]
    level: ScheduleLevelArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The level as query pairs, checked here so a bad name fails before any request.
fn level_pairs(level: &ScheduleLevelArgs) -> Result<Vec<(&'static str, String)>, Failure> {
    let namespace = level.namespace.as_deref().filter(|n| !n.is_empty());
    let pool = match (level.pool.as_deref().filter(|p| !p.is_empty()), namespace) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => Some(DEFAULT_POOL),
        (None, None) => None,
    };
    let mut pairs = Vec::new();
    if let Some(pool) = pool {
        PoolName::new(pool).map_err(|e| Failure::core(&e))?;
        pairs.push(("pool_name", pool.to_owned()));
    }
    if let Some(ns) = namespace {
        basalt_core::Namespace::new(ns).map_err(|e| Failure::core(&e))?;
        pairs.push(("namespace", ns.to_owned()));
    }
    Ok(pairs)
}

fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    format!("{path}{}", query(&borrowed))
}

const SCHEDULE_PATH: &str = "/api/block/image/trash/purge-schedule";

/// `every 1d starting at 14:00:00, every 30m`, as rbd prints a schedule.
fn describe_items(schedule: &Value) -> String {
    let items = schedule.get("schedule").and_then(Value::as_array).cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let interval = item.get("interval").and_then(Value::as_str).unwrap_or("?");
            match item.get("start_time").and_then(Value::as_str) {
                Some(start) => format!("every {interval} starting at {start}"),
                None => format!("every {interval}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn schedule(api: &Api, command: &ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::Add(a) => {
            let mut body = json!({ "interval": a.interval });
            for (key, value) in level_pairs(&a.level)? {
                body[key] = json!(value);
            }
            if let Some(start) = a.start_time.as_deref().filter(|s| !s.is_empty()) {
                body["start_time"] = json!(start);
            }
            api.call("POST", SCHEDULE_PATH, Some(&body))?;
            Ok(())
        }
        ScheduleCommand::Remove(a) => {
            let mut pairs = level_pairs(&a.level)?;
            if let Some(interval) = a.interval.as_deref().filter(|s| !s.is_empty()) {
                pairs.push(("interval", interval.to_owned()));
                if let Some(start) = a.start_time.as_deref().filter(|s| !s.is_empty()) {
                    pairs.push(("start_time", start.to_owned()));
                }
            }
            api.call("DELETE", &with_query(SCHEDULE_PATH, &pairs), None)?;
            Ok(())
        }
        ScheduleCommand::Ls(a) => {
            let mut pairs = level_pairs(&a.level)?;
            if a.recursive {
                pairs.push(("recursive", "true".to_owned()));
            }
            let listed = api.get_value(&with_query(SCHEDULE_PATH, &pairs))?;
            let schedules = listed.as_array().cloned().unwrap_or_default();
            if a.format == Format::Json {
                return print_json(&listed);
            }
            if !a.recursive {
                return match schedules.first() {
                    Some(schedule) => print_text(&format!("{}\n", describe_items(schedule))),
                    None => Ok(()),
                };
            }
            let mut table = Table::new(&[("POOL", Align::Left), ("NAMESPACE", Align::Left), ("SCHEDULE", Align::Left)]);
            for schedule in &schedules {
                let pool = schedule.get("pool_name").and_then(Value::as_str).unwrap_or("-");
                let ns = schedule.get("namespace").and_then(Value::as_str).unwrap_or("-");
                table.row(vec![pool.to_owned(), ns.to_owned(), describe_items(schedule)]);
            }
            if table.is_empty() { Ok(()) } else { table.print() }
        }
        ScheduleCommand::Status(a) => {
            let pairs = level_pairs(&a.level)?;
            let status = api.get_value(&with_query(&format!("{SCHEDULE_PATH}/status"), &pairs))?;
            if a.format == Format::Json {
                return print_json(&status);
            }
            let mut table =
                Table::new(&[("POOL", Align::Left), ("NAMESPACE", Align::Left), ("SCHEDULE TIME", Align::Left)]);
            for item in status.as_array().cloned().unwrap_or_default() {
                let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
                let time = text("schedule_time");
                let shown = parse_time(&time).map(format_schedule_time).unwrap_or(time);
                table.row(vec![text("pool_name"), text("namespace"), shown]);
            }
            if table.is_empty() { Ok(()) } else { table.print() }
        }
    }
}

/// `2026-12-02 21:00:00` (UTC), as rbd shows a schedule time.
fn format_schedule_time(secs: i64) -> String {
    rfc3339(secs).replacen('T', " ", 1).trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("now"), Ok(Expiry::Delay(0)));
        assert_eq!(parse_expiry("now + 2 hours"), Ok(Expiry::Delay(7200)));
        assert_eq!(parse_expiry("now+30m"), Ok(Expiry::Delay(1800)));
        assert_eq!(parse_expiry("+1d"), Ok(Expiry::Delay(86_400)));
        assert_eq!(parse_expiry("1795616417"), Ok(Expiry::At(1_795_616_417)));
        assert_eq!(parse_expiry("2026-11-25 14:20:17"), Ok(Expiry::At(1_795_616_417)));
        assert_eq!(parse_expiry("2026-11-25T14:20:17Z"), Ok(Expiry::At(1_795_616_417)));
        for bad in ["now - 1h", "now + 2 fortnights", "tomorrow", ""] {
            assert_eq!(parse_expiry(bad).expect_err(bad).exit_code, 22, "{bad}");
        }
    }

    #[test]
    fn purge_reports_what_stayed() {
        assert!(check_purge(&json!({"removed": ["a"], "skipped": []})).is_ok());
        assert!(check_purge(&json!({"id": "t", "success": true})).is_ok());
        let err =
            check_purge(&json!({"removed": [], "skipped": [{"id": "b", "detail": "has clones", "code": "ENOTEMPTY"}]}))
                .expect_err("skipped entries fail");
        let failure = err.downcast_ref::<Failure>().expect("a failure");
        assert_eq!(failure.exit_code, 39);
        assert!(failure.message.starts_with("some expired images could not be removed: b: has clones"));
    }
}
