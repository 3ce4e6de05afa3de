//! Trash commands: `trash mv [--expires-at]`, `ls [-l]`, `restore`, `rm [--force]`, `purge`.

use anyhow::Result;
use basalt_core::{DEFAULT_POOL, PoolName, PoolNs};
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
