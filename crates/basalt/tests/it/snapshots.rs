//! Snapshot tests of what users see: one fixed scenario against a real server, and the text (and JSON) of the
//! listing commands recorded under `snapshots/`, so a change to any column, header or field shows up in review.
//!
//! Run-dependent values are replaced before recording: image ids (in order of first appearance), times, and the
//! id-derived fields of the API's image object. Mismatches fail the test; with `CI=true` (as CI runs) insta also
//! refuses to write new snapshots, so a missing `.snap` file fails too. To accept changes locally:
//! `INSTA_UPDATE=always cargo nextest run -p basalt snapshots` (or `cargo insta review`).

use basalt_core::rbd_diff::{DiffRecord, DiffVersion, DiffWriter};
use serde_json::Value;

use super::common::Server;

/// Replaces what differs from run to run in CLI text: the given ids and rbd-style times.
fn normalize(text: &str, ids: &[String]) -> String {
    let mut out = text.to_owned();
    for (n, id) in ids.iter().enumerate() {
        out = out.replace(id.as_str(), &format!("<id{}>", n + 1));
    }
    redact_ctimes(&out)
}

/// Replaces times in rbd's format (`Wed Nov 25 14:20:17 2026`) by `<time>`, keeping fixed dates far in the future
/// (2100), which the scenario chose and which are part of what is checked.
fn redact_ctimes(text: &str) -> String {
    const DAYS: [&str; 7] = ["Mon ", "Tue ", "Wed ", "Thu ", "Fri ", "Sat ", "Sun "];
    const LEN: usize = "Wed Nov 25 14:20:17 2026".len();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let candidate = text.get(at..at + LEN);
        let is_time = candidate.is_some_and(|c| {
            let b = c.as_bytes();
            DAYS.iter().any(|d| c.starts_with(d))
                && b[7] == b' '
                && b[13] == b':'
                && b[16] == b':'
                && b[19] == b' '
                && c[20..].bytes().all(|x| x.is_ascii_digit())
                && !c.ends_with("2100")
        });
        if is_time {
            out.push_str("<time>");
            at += LEN;
        } else {
            let ch = text[at..].chars().next().unwrap_or_default();
            out.push(ch);
            at += ch.len_utf8().max(1);
        }
    }
    out
}

/// Replaces the run-dependent fields of API objects: string ids, id-derived names, times and watchers.
fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let run_dependent = matches!(
                    key.as_str(),
                    "unique_id" | "block_name_prefix" | "timestamp" | "modify_timestamp" | "image_id" | "since"
                ) || (key == "id" && field.is_string());
                if run_dependent && !field.is_null() {
                    *field = Value::String(format!("[{key}]"));
                } else {
                    redact_json(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

fn diff_stream(records: &[DiffRecord]) -> Vec<u8> {
    let mut writer = DiffWriter::new(Vec::new(), DiffVersion::V1).expect("banner");
    for record in records {
        writer.write_record(record).expect("record");
    }
    writer.finish().expect("end")
}

#[test]
fn what_users_see() {
    let s = Server::start();

    // The scenario: images of both layouts with data and snapshots, a clone, a namespace, the trash, an override.
    s.ok(&["create", "--size", "1G", "vm1"]);
    s.ok(&["create", "--size", "100M", "--object-size", "1M", "--image-feature", "layering", "rbd/vm2"]);
    let data = diff_stream(&[
        DiffRecord::Size(100 << 20),
        DiffRecord::Data { offset: 0, data: vec![1; 64 << 10] },
        DiffRecord::Data { offset: 3 << 20, data: vec![2; 4096] },
    ]);
    let out = s.run_with_stdin(&["import-diff", "-", "vm2"], &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["snap", "create", "vm2@base"]);
    let more = diff_stream(&[DiffRecord::Size(100 << 20), DiffRecord::Data { offset: 8 << 20, data: vec![3; 8192] }]);
    let out = s.run_with_stdin(&["import-diff", "-", "vm2"], &more);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["snap", "create", "vm1@s1"]);
    s.ok(&["snap", "protect", "vm1@s1"]);
    s.ok(&["snap", "create", "vm1@s2"]);
    s.ok(&["clone", "vm1@s1", "child"]);
    s.ok(&["namespace", "create", "rbd/tenant"]);
    s.ok(&["create", "--size", "10M", "rbd/tenant/t1"]);
    s.ok(&["create", "--size", "2M", "old"]);
    s.ok(&["trash", "mv", "--expires-at", "2100-01-01", "old"]);
    s.ok(&["create", "--size", "3M", "gone"]);
    s.ok(&["trash", "mv", "gone"]);
    s.ok(&["config", "image", "set", "vm1", "rbd_qos_iops_limit", "100"]);

    // Ids in a fixed order: the images by name, then the trash by name.
    let mut named: Vec<(String, String)> = Vec::new();
    for listing in [s.json(&["ls", "--format", "json"]), s.json(&["ls", "--format", "json", "rbd/tenant"])] {
        for image in listing.as_array().expect("list") {
            named.push((image["name"].as_str().expect("name").into(), image["id"].as_str().expect("id").into()));
        }
    }
    let trash = s.json(&["trash", "ls", "--format", "json"]);
    let mut trashed: Vec<(String, String)> = Vec::new();
    for entry in trash.as_array().expect("list") {
        let entry = entry.get("value").and_then(Value::as_array).map_or(vec![entry.clone()], Clone::clone);
        for e in entry {
            trashed.push((e["name"].as_str().expect("name").into(), e["id"].as_str().expect("id").into()));
        }
    }
    named.sort();
    trashed.sort();
    let ids: Vec<String> = named.into_iter().chain(trashed).map(|(_, id)| id).collect();
    let text = |args: &[&str]| normalize(&s.ok(args), &ids);

    insta::assert_snapshot!("ls_long", text(&["ls", "-l"]));
    insta::assert_snapshot!("info_image", text(&["info", "vm1"]));
    insta::assert_snapshot!("info_snapshot_small_objects", text(&["info", "vm2@base"]));
    insta::assert_snapshot!("info_clone", text(&["info", "child"]));
    insta::assert_snapshot!("snap_ls", text(&["snap", "ls", "vm1"]));
    insta::assert_snapshot!("trash_ls_long", text(&["trash", "ls", "-l"]));
    insta::assert_snapshot!("du_pool", text(&["du"]));
    insta::assert_snapshot!("du_image", text(&["du", "vm2"]));
    insta::assert_snapshot!("diff", text(&["diff", "vm2"]));
    insta::assert_snapshot!("diff_from_snap", text(&["diff", "--from-snap", "base", "vm2"]));
    insta::assert_snapshot!("namespace_ls", text(&["namespace", "ls"]));
    insta::assert_snapshot!("config_image_list", text(&["config", "image", "list", "vm1"]));
    let mut config = s.json(&["config", "image", "list", "vm1", "--format", "json"]);
    redact_json(&mut config);
    insta::assert_json_snapshot!("config_image_list_json", config);

    // The API's image object, as any client gets it.
    let token = s.admin_token();
    let (status, mut image) = s.http("GET", "/api/block/image/rbd%2Fvm2", &token, None);
    assert_eq!(status, 200, "{image}");
    redact_json(&mut image);
    insta::assert_json_snapshot!("api_image_object", image);
}

#[test]
fn normalizing_keeps_fixed_dates_and_replaces_the_rest() {
    let ids = ["000000000007".to_owned()];
    let text = "000000000007 Wed Nov 25 14:20:17 2026 protected until Fri Jan  1 00:00:00 2100 é";
    assert_eq!(normalize(text, &ids), "<id1> <time> protected until Fri Jan  1 00:00:00 2100 é");
}
