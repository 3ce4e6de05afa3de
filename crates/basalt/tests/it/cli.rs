//! The rbd-style CLI end to end: a real `basalt serve` on a temp data dir, driven by the `basalt` binary over the
//! Unix socket (and over HTTP with a login), through the seed's quick flow and each refusal of its troubleshooting
//! table, checking exit codes, the one-line error rule and the key output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::common::{ADMIN_PASSWORD, Server, check_failure, lines, trash_id};

#[test]
fn seed_quick_flow_and_refusals_through_the_cli() {
    let s = Server::start();

    // 1. Prerequisite: a healthy pool tagged rbd.
    assert_eq!(lines(&s.ok(&["pool", "ls"])), ["rbd"]);
    let pools = s.ok(&["pool", "ls", "-l"]);
    assert!(pools.starts_with("NAME"), "{pools}");
    assert!(pools.lines().nth(1).is_some_and(|l| l.starts_with("rbd") && l.contains("rbd")), "{pools}");

    // 2. Create images; a bare size is MiB, as in rbd.
    s.ok(&["create", "--size", "1G", "rbd/vm1"]);
    s.ok(&["create", "--size", "100", "vm2", "--image-feature", "layering"]);
    assert_eq!(lines(&s.ok(&["ls"])), ["vm1", "vm2"]);
    let listing = s.ok(&["ls", "-l", "rbd"]);
    let rows = lines(&listing);
    assert_eq!(rows[0], "NAME  SIZE     PARENT  FMT  PROT  LOCK  STATUS", "{listing}");
    assert!(rows[1].starts_with("vm1     1 GiB            2") && rows[1].ends_with("  OK"), "{listing}");
    assert!(rows[2].starts_with("vm2   100 MiB"), "{listing}");
    let json = s.json(&["ls", "--format", "json"]);
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json[0]["name"], "vm1");

    // 3. Details.
    let info = s.ok(&["info", "vm1"]);
    for needle in [
        "rbd image 'vm1':\n",
        "\tsize 1 GiB in 256 objects\n",
        "\torder 22 (4 MiB objects)\n",
        "\tsnapshot_count: 0\n",
        "\tblock_name_prefix: rbd_data.",
        "\tformat: 2\n",
        "\tfeatures: layering",
        "\tcreate_timestamp: ",
    ] {
        assert!(info.contains(needle), "missing {needle:?} in:\n{info}");
    }
    assert!(!info.contains("parent:"), "{info}");
    let json = s.json(&["info", "--format", "json", "rbd/vm1"]);
    assert_eq!(json["size"], 1u64 << 30);
    assert!(s.ok(&["info", "vm2"]).contains("\tfeatures: layering\n"));

    // 4. Snapshot, 5. protect and clone.
    s.ok(&["snap", "create", "vm1@s1"]);
    s.ok(&["snap", "protect", "--image", "vm1", "--snap", "s1"]);
    let snaps = s.ok(&["snap", "ls", "vm1"]);
    let snap_rows = lines(&snaps);
    assert!(snap_rows[0].starts_with("SNAPID  NAME  SIZE   PROTECTED  TIMESTAMP"), "{snaps}");
    assert!(snap_rows[1].contains(" s1 ") && snap_rows[1].contains("1 GiB  yes"), "{snaps}");
    s.ok(&["clone", "vm1@s1", "rbd/child"]);
    let info = s.ok(&["info", "child"]);
    assert!(info.contains("\tparent: rbd/vm1@s1\n\toverlap: 1 GiB\n"), "{info}");
    assert!(s.ok(&["ls", "-l"]).lines().any(|l| l.starts_with("child") && l.contains("rbd/vm1@s1")));
    assert_eq!(lines(&s.ok(&["children", "vm1@s1"])), ["rbd/child"]);

    // Troubleshooting: snapshot with linked clones, image with snapshots, clone of an unprotected snapshot.
    s.fails(&["snap", "unprotect", "vm1@s1"], 16, "cannot unprotect");
    s.fails(&["rm", "vm1"], 39, "image has snapshots");
    s.ok(&["snap", "create", "vm1@s2"]);
    s.fails(&["clone", "vm1@s2", "c2"], 22, "not protected");
    s.fails(&["clone", "vm1", "c2"], 22, "snapshot name was not specified");
    s.fails(&["snap", "rm", "vm1@s1"], 16, "");

    // 6. Flatten clears the parent.
    s.ok(&["flatten", "child"]);
    assert!(!s.ok(&["info", "child"]).contains("parent:"));
    assert_eq!(s.ok(&["children", "vm1@s1"]), "");
    s.ok(&["snap", "unprotect", "vm1@s1"]);
    s.ok(&["snap", "rename", "vm1@s2", "s2b"]);
    s.ok(&["snap", "rm", "vm1@s1"]);
    s.fails(&["rm", "vm1"], 39, "image has snapshots - remove them first");
    s.ok(&["snap", "rm", "vm1@s2b"]);
    assert_eq!(s.ok(&["snap", "ls", "vm1"]), "");

    // 7. Trash: move, list, restore under a new name.
    s.ok(&["trash", "mv", "child"]);
    assert_eq!(lines(&s.ok(&["ls"])), ["vm1", "vm2"]);
    let trash = s.ok(&["trash", "ls"]);
    let id = trash_id(&trash, "child");
    let long = s.ok(&["trash", "ls", "-l", "rbd"]);
    assert!(long.starts_with("ID") && long.contains("USER") && long.contains("expired at"), "{long}");
    s.ok(&["trash", "restore", "--image-id", &id, "--image", "child2"]);
    assert_eq!(s.ok(&["trash", "ls"]), "");
    assert_eq!(lines(&s.ok(&["ls"])), ["child2", "vm1", "vm2"]);

    // Trash removal before expiry is refused, forced removal works.
    s.ok(&["trash", "mv", "--expires-at", "now + 1 hour", "child2"]);
    let id = trash_id(&s.ok(&["trash", "ls"]), "child2");
    assert!(s.ok(&["trash", "ls", "-l"]).contains("protected until"));
    s.fails(&["trash", "rm", &format!("rbd/{id}")], 1, "deferment time has not expired");
    s.ok(&["trash", "purge"]);
    assert!(s.ok(&["trash", "ls"]).contains(&id), "purge removed an unexpired entry");
    s.ok(&["trash", "rm", "--force", &format!("rbd/{id}")]);
    assert_eq!(s.ok(&["trash", "ls"]), "");
    s.fails(&["trash", "restore", &format!("rbd/{id}")], 2, "");

    // Troubleshooting: a trashed template whose snapshot has a linked clone cannot be purged or removed.
    s.ok(&["create", "--size", "8M", "tmpl"]);
    s.ok(&["snap", "create", "tmpl@gold"]);
    s.ok(&["snap", "protect", "tmpl@gold"]);
    s.ok(&["clone", "tmpl@gold", "vm3"]);
    s.ok(&["trash", "mv", "tmpl"]);
    assert!(s.ok(&["info", "vm3"]).contains("\tparent: rbd/tmpl@gold (trash)\n"));
    s.fails(&["trash", "purge", "rbd"], 39, "some expired images could not be removed");
    let id = trash_id(&s.ok(&["trash", "ls"]), "tmpl");
    s.fails(&["trash", "rm", "--force", &id], 39, "linked clones");
    s.ok(&["flatten", "vm3"]);
    s.ok(&["trash", "restore", &id]);
    s.ok(&["snap", "unprotect", "tmpl@gold"]);
    s.ok(&["snap", "purge", "tmpl"]);
    s.ok(&["rm", "tmpl"]);
    s.ok(&["rm", "vm3"]);

    // Namespaces.
    s.ok(&["namespace", "create", "rbd/tenant"]);
    let namespaces = s.ok(&["namespace", "ls", "rbd"]);
    assert!(namespaces.lines().any(|l| l.starts_with("tenant")), "{namespaces}");
    s.ok(&["create", "--size", "10M", "--pool", "rbd", "--namespace", "tenant", "t1"]);
    assert_eq!(lines(&s.ok(&["ls", "rbd/tenant"])), ["t1"]);
    assert_eq!(lines(&s.ok(&["ls"])), ["vm1", "vm2"]);
    s.fails(&["namespace", "rm", "rbd/tenant"], 16, "tenant");
    s.ok(&["rm", "rbd/tenant/t1"]);
    s.ok(&["namespace", "rm", "rbd/tenant"]);
    assert!(!s.ok(&["namespace", "ls"]).contains("tenant"));

    // Pools: image workflows need the rbd tag; a pool with images cannot go.
    s.ok(&["pool", "create", "p2"]);
    assert_eq!(lines(&s.ok(&["pool", "ls"])), ["p2", "rbd"]);
    s.fails(&["create", "--size", "1M", "p2/x"], 22, "pool application enable p2 rbd");
    s.ok(&["pool", "application", "enable", "p2", "rbd"]);
    s.ok(&["create", "--size", "1M", "p2/x"]);
    assert_eq!(lines(&s.ok(&["ls", "-p", "p2"])), ["x"]);
    s.fails(&["pool", "rm", "p2"], 16, "p2");
    s.ok(&["rm", "p2/x"]);
    s.ok(&["pool", "rm", "p2"]);
    s.ok(&["pool", "create", "--application", "rbd", "p3"]);
    assert!(s.ok(&["pool", "ls", "-l"]).lines().any(|l| l.starts_with("p3") && l.contains(" rbd ")));
    // Quotas as ceph osd pool set-quota sets them, shown as ceph osd pool get-quota shows them.
    s.ok(&["pool", "set-quota", "p3", "max_bytes", "10G"]);
    s.ok(&["pool", "set-quota", "p3", "max_objects", "1000"]);
    let quota = s.ok(&["pool", "get-quota", "p3"]);
    assert_eq!(quota, "quotas for pool 'p3':\n  max objects: 1000 objects\n  max bytes  : 10 GiB\n");
    s.fails(&["pool", "set-quota", "p3", "max_objects", "lots"], 22, "whole number");
    s.ok(&["pool", "set-quota", "p3", "max_bytes", "0"]);
    assert!(s.ok(&["pool", "get-quota", "p3"]).contains("max bytes  : N/A"));
    s.ok(&["pool", "rm", "p3"]);

    // Configuration with its source.
    s.ok(&["config", "image", "set", "vm1", "rbd_qos_iops_limit", "100"]);
    assert_eq!(s.ok(&["config", "image", "get", "vm1", "rbd_qos_iops_limit"]), "100\n");
    let config = s.ok(&["config", "image", "list", "rbd/vm1"]);
    assert!(config.starts_with("Name"), "{config}");
    let row = config.lines().find(|l| l.starts_with("rbd_qos_iops_limit ")).expect("option listed");
    assert!(row.contains(" 100 ") && row.ends_with("image"), "{row}");
    let pool_row = s.ok(&["config", "pool", "list", "rbd"]);
    assert!(pool_row.lines().any(|l| l.starts_with("rbd_qos_iops_limit ") && l.ends_with("global")), "{pool_row}");
    s.ok(&["config", "image", "rm", "vm1", "rbd_qos_iops_limit"]);
    s.fails(&["config", "image", "get", "vm1", "rbd_qos_iops_limit"], 2, "rbd_qos_iops_limit is not set");
    s.fails(&["config", "image", "set", "vm1", "no_such_option", "1"], 22, "");

    // Resize: grow, refused shrink, equal size, explicit shrink.
    s.ok(&["resize", "--size", "2G", "vm1"]);
    assert!(s.ok(&["info", "vm1"]).contains("\tsize 2 GiB in 512 objects\n"));
    s.fails(&["resize", "--size", "1G", "vm1"], 22, "shrinking an image is only allowed with the --allow-shrink flag");
    s.fails(&["resize", "--size", "2G", "vm1"], 22, "new size is equal to original size");
    s.ok(&["resize", "--size", "1G", "--allow-shrink", "vm1"]);
    assert!(s.ok(&["info", "vm1"]).contains("\tsize 1 GiB in 256 objects\n"));

    // du and diff.
    let du = s.ok(&["du", "vm1"]);
    let du_rows = lines(&du);
    assert_eq!(du_rows[0], "NAME     PROVISIONED  USED", "{du}");
    assert!(du_rows[1].starts_with("vm1") && du_rows[1].contains("1 GiB"), "{du}");
    assert!(du_rows.last().is_some_and(|l| l.starts_with("<TOTAL>") && l.contains("1 GiB")), "{du}");
    assert!(s.json(&["du", "--format", "json", "vm1"]).is_array());
    assert!(s.ok(&["du"]).contains("vm2"), "du of the whole pool");
    assert!(s.ok(&["diff", "vm1"]).starts_with("Offset  Length  Type"));
    assert!(s.json(&["diff", "--whole-object", "--format", "json", "vm1"]).is_array());

    // Copies: head, snapshot, deep copy with snapshots; rename.
    s.ok(&["snap", "create", "vm1@s3"]);
    s.ok(&["cp", "vm1", "vm1-copy"]);
    s.ok(&["cp", "--snap", "s3", "vm1", "--dest", "fromsnap", "--dest-pool", "rbd"]);
    s.ok(&["deep", "cp", "vm1", "rbd/vm1-deep"]);
    assert!(s.ok(&["snap", "ls", "vm1-deep"]).contains(" s3 "));
    assert_eq!(s.ok(&["snap", "ls", "vm1-copy"]), "");
    s.ok(&["rename", "vm1-copy", "renamed"]);
    s.fails(&["rename", "renamed", "other/renamed"], 22, "across pools");
    s.fails(&["rename", "renamed", "vm2"], 17, "");
    s.fails(&["rm", "vm1-deep"], 39, "image has snapshots");
    s.ok(&["snap", "purge", "vm1-deep"]);
    s.ok(&["rm", "vm1-deep"]);
    assert_eq!(lines(&s.ok(&["ls"])), ["fromsnap", "renamed", "vm1", "vm2"]);

    // Features: object-map and fast-diff go together.
    s.ok(&["feature", "disable", "vm1", "object-map"]);
    let info = s.ok(&["info", "vm1"]);
    assert!(!info.contains("object-map") && !info.contains("fast-diff"), "{info}");
    s.ok(&["feature", "enable", "vm1", "object-map"]);
    assert!(s.ok(&["info", "vm1"]).contains("exclusive-lock, object-map, fast-diff"));
    s.fails(&["feature", "enable", "vm1", "exclusive-lock"], 22, "already enabled");

    // Snapshot limits and rollback.
    s.ok(&["snap", "limit", "set", "--limit", "1", "vm1"]);
    s.fails(&["snap", "create", "vm1@s4"], 122, "");
    s.ok(&["snap", "limit", "clear", "vm1"]);
    s.ok(&["snap", "rollback", "vm1@s3"]);

    // Missing objects and bad specs: one line, errno exit codes.
    s.fails(&["info", "nothere"], 2, "");
    s.fails(&["info", "vm1@nosnap"], 2, "nosnap");
    s.fails(&["create", "--size", "1G", "vm1"], 17, "");
    s.fails(&["create", "--size", "1G", "--object-size", "3M", "odd"], 22, "");
    s.fails(&["create", "--size", "1G", "--stripe-unit", "64K", "odd"], 22, "stripe-unit and stripe-count");
    s.fails(&["info", "a@b@c"], 22, "invalid spec");
}

#[test]
fn http_transport_with_login_and_tokens() {
    let s = Server::start();
    let url = s.url();

    // Without a token the server refuses, in one line with a hint.
    s.fails(&["--server", &url, "ls"], 13, "basalt login");

    // --print shows the token; BASALT_TOKEN uses it.
    let token = s.ok(&["login", "--server", &url, "--user", "admin", "--password", ADMIN_PASSWORD, "--print"]);
    let token = token.trim();
    assert!(!token.is_empty());
    let out = s.command().args(["ls"]).env("BASALT_URL", &url).env("BASALT_TOKEN", token).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.command().args(["--server", &url, "ls"]).env("BASALT_TOKEN", "bogus").output().expect("run");
    check_failure(&out, &["ls"], 13, "");

    // A wrong password is refused.
    s.fails(&["login", "--server", &url, "--password", "wrong"], 13, "");

    // The saved login: a 0600 file under ~/.config/basalt, used by later commands, removed by logout.
    let out = s
        .command()
        .args(["login", "--server", &url])
        .env("BASALT_PASSWORD", ADMIN_PASSWORD)
        .output()
        .expect("run login");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token_file = s.home().join(".config/basalt/token");
    let mode = std::fs::metadata(&token_file).expect("token saved").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    s.ok(&["--server", &url, "create", "--size", "1M", "over-http"]);
    assert_eq!(lines(&s.ok(&["--server", &url, "ls"])), ["over-http"]);
    s.ok(&["--server", &url, "logout"]);
    assert!(!token_file.exists());
    s.fails(&["--server", &url, "ls"], 13, "");
}

#[test]
fn a_missing_server_is_named_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("nothing");
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["ls", "--data-dir"])
        .arg(&data)
        .env_remove("BASALT_URL")
        .output()
        .expect("run basalt");
    let socket = data.join("api.sock");
    let expected =
        format!("basalt: cannot reach the basalt server at {} (is 'basalt serve' running?)\n", socket.display());
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn argument_errors_are_one_line_before_any_connection() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_basalt"))
            .args(args)
            .env("BASALT_DATA_DIR", Path::new("/nonexistent/basalt"))
            .env_remove("BASALT_URL")
            .output()
            .expect("run basalt")
    };
    // clap's own errors keep its exit code 2.
    check_failure(&run(&["create", "vm"]), &["create"], 2, "--size");
    check_failure(&run(&["snap", "frobnicate"]), &["snap"], 2, "frobnicate");
    check_failure(&run(&["ls", "--format", "xml"]), &["ls"], 2, "xml");
    // Specs, sizes and combinations are EINVAL (22), as in rbd.
    check_failure(&run(&["info", "a@b@c"]), &["info"], 22, "invalid spec 'a@b@c'");
    check_failure(&run(&["create", "--size", "10X", "vm"]), &["create"], 22, "invalid size");
    check_failure(&run(&["rm", "vm@snap"]), &["rm"], 22, "snapshot name specified");
    check_failure(&run(&["info"]), &["info"], 22, "image name was not specified");
    check_failure(&run(&["info", "vm", "--image", "other"]), &["info"], 22, "given twice");
    check_failure(&run(&["trash", "mv", "--expires-at", "someday", "vm"]), &["trash"], 22, "--expires-at");
    check_failure(&run(&["--server", "ftp://h", "ls"]), &["ls"], 22, "only http:// and https://");
    check_failure(&run(&["--server", "http://h", "--ca-cert", "/ca.pem", "ls"]), &["ls"], 22, "https:// servers only");
    // Help is not an error.
    let help = run(&["help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("snap"));
}

/// An entry moved to the trash without an expiry may be purged at once, but nothing removes it unless asked: a
/// server (re)start and its background intervals leave it, and it can still be restored.
#[test]
fn trash_entries_stay_until_someone_removes_them() {
    let fast = [("BASALT_TRASH_SCHEDULE_TICK_MS", "50")];
    let mut s = Server::start_with_env(&fast);
    s.ok(&["create", "--size", "8M", "keep"]);
    s.ok(&["trash", "mv", "keep"]);
    let id = trash_id(&s.ok(&["trash", "ls"]), "keep");
    assert!(s.ok(&["trash", "ls", "-l"]).contains("expired at"), "the entry should be purgeable at once");
    // The old server purged every expired entry when it started and every minute after.
    s.restart_with_env(&fast);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(trash_id(&s.ok(&["trash", "ls"]), "keep"), id, "the entry was removed on its own");
    s.ok(&["trash", "restore", "--image-id", &id]);
    assert_eq!(s.ok(&["trash", "ls"]), "");
    assert_eq!(lines(&s.ok(&["ls"])), ["keep"]);
}

/// `trash purge schedule add|ls|status|remove` with rbd's argument shapes, over the REST API; a schedule is off
/// until added, and bad intervals, start times and levels are refused without changing anything.
#[test]
fn trash_purge_schedules_are_managed_like_rbd() {
    let s = Server::start();
    assert_eq!(s.ok(&["trash", "purge", "schedule", "ls", "-R"]), "", "no schedule by default");
    assert_eq!(s.ok(&["trash", "purge", "schedule", "status"]), "");
    s.ok(&["namespace", "create", "rbd/tenant"]);
    s.ok(&["trash", "purge", "schedule", "add", "-p", "rbd", "1d", "02:00"]);
    s.ok(&["trash", "purge", "schedule", "add", "-p", "rbd", "12h"]);
    s.ok(&["trash", "purge", "schedule", "add", "-p", "rbd", "--namespace", "tenant", "30m"]);
    assert_eq!(s.ok(&["trash", "purge", "schedule", "ls", "-p", "rbd"]), "every 12h, every 1d starting at 02:00:00\n");
    assert_eq!(s.ok(&["trash", "purge", "schedule", "ls", "--namespace", "tenant"]), "every 30m\n");
    let all = s.ok(&["trash", "purge", "schedule", "ls", "-R"]);
    assert_eq!(
        lines(&all),
        [
            "POOL  NAMESPACE  SCHEDULE                                 ",
            "rbd   -          every 12h, every 1d starting at 02:00:00 ",
            "rbd   tenant     every 30m                                ",
        ]
        .map(str::trim_end),
        "{all}"
    );
    let json = s.json(&["trash", "purge", "schedule", "ls", "-p", "rbd", "-R", "--format", "json"]);
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    let status = s.ok(&["trash", "purge", "schedule", "status", "-p", "rbd"]);
    let rows = lines(&status);
    assert!(rows[0].starts_with("POOL") && rows[0].contains("SCHEDULE TIME"), "{status}");
    assert_eq!(rows.len(), 3, "the default namespace and tenant: {status}");
    assert!(rows[1].starts_with("rbd ") && rows[2].contains("tenant"), "{status}");

    s.fails(&["trash", "purge", "schedule", "add", "-p", "rbd", "1w"], 22, "invalid interval");
    s.fails(&["trash", "purge", "schedule", "add", "-p", "rbd", "1d", "25:00"], 22, "invalid start time");
    s.fails(&["trash", "purge", "schedule", "add", "-p", "nope", "1d"], 2, "does not exist");
    s.fails(&["trash", "purge", "schedule", "add", "-p", "rbd", "--namespace", "nope", "1d"], 2, "does not exist");
    s.fails(&["trash", "purge", "schedule", "remove", "-p", "rbd", "2h"], 2, "no trash purge schedule");

    s.ok(&["trash", "purge", "schedule", "remove", "-p", "rbd", "1d", "02:00"]);
    assert_eq!(s.ok(&["trash", "purge", "schedule", "ls", "-p", "rbd"]), "every 12h\n");
    s.ok(&["trash", "purge", "schedule", "rm", "-p", "rbd"]);
    s.ok(&["trash", "purge", "schedule", "remove", "--namespace", "tenant"]);
    assert_eq!(s.ok(&["trash", "purge", "schedule", "ls", "-R"]), "");
    // `trash purge POOL` still purges.
    s.ok(&["trash", "purge", "rbd"]);
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// The server runs the schedules that are due: a schedule for the default namespace of pool rbd added a day before
/// the server starts is overdue, so the server's first ticks purge its expired entries, keep the protected one,
/// record the run (the next one is in the future) and leave namespace rbd/other, which no schedule covers, alone.
#[test]
fn the_server_runs_a_due_purge_schedule() {
    let fast = [("BASALT_TRASH_SCHEDULE_TICK_MS", "50")];
    let mut s = Server::start_with_env(&fast);
    s.ok(&["namespace", "create", "rbd/other"]);
    for image in ["rbd/expired", "rbd/protected", "rbd/other/elsewhere"] {
        s.ok(&["create", "--size", "8M", image]);
    }
    s.ok(&["trash", "mv", "expired"]);
    s.ok(&["trash", "mv", "--expires-at", "now + 1 hour", "protected"]);
    s.ok(&["trash", "mv", "rbd/other/elsewhere"]);
    s.stop();
    {
        let day_ago = basalt_core::Timestamp(now() - 86_400);
        let clock = std::sync::Arc::new(basalt_core::ManualClock::new(day_ago));
        let engine = basalt_engine::Engine::open(s.data.path(), clock).expect("open the stopped server's store");
        let level = basalt_core::ScheduleLevel::namespace(basalt_core::PoolNs::parse("rbd").expect("location"));
        let item = basalt_core::ScheduleItem {
            interval: basalt_core::ScheduleInterval::parse("1h").expect("interval"),
            start_time: None,
        };
        basalt_core::Backend::trash_purge_schedule_add(&engine, &level, &item).expect("add a schedule a day ago");
    }
    s.start_again(&fast);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.ok(&["trash", "ls"]).contains(" expired\n") {
        assert!(std::time::Instant::now() < deadline, "the due schedule did not run: {}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(lines(&s.ok(&["trash", "ls"])).len(), 1, "the protected entry stays");
    assert!(s.ok(&["trash", "ls"]).ends_with(" protected\n"));
    assert!(s.ok(&["trash", "ls", "rbd/other"]).ends_with(" elsewhere\n"), "another namespace was purged");
    let status = s.json(&["trash", "purge", "schedule", "status", "-p", "rbd", "--format", "json"]);
    let next = status[0]["schedule_time"].as_str().expect("a next run");
    let next = basalt_core::time::parse_time(next).expect("time");
    assert!(next > i64::try_from(now()).expect("time"), "the run was not recorded: next run {next}");
}

#[test]
fn ls_and_info_show_an_image_degraded_when_its_files_are_gone() {
    let mut s = Server::start();
    s.ok(&["create", "--size", "4M", "rbd/broken"]);
    let layers = s.data.path().join(basalt_engine::LAYERS_DIR);
    let files: Vec<std::path::PathBuf> =
        std::fs::read_dir(&layers).expect("layers dir").map(|e| e.expect("entry").path()).collect();
    assert!(!files.is_empty(), "the image has a layer file");
    s.ok(&["create", "--size", "4M", "rbd/healthy"]);
    assert!(s.ok(&["info", "broken"]).contains("\tstatus: OK\n"));

    s.stop();
    for file in &files {
        std::fs::remove_file(file).expect("remove layer file");
    }
    s.start_again(&[]);
    let listing = s.ok(&["ls", "-l"]);
    let rows = lines(&listing);
    assert_eq!(rows[0], "NAME     SIZE   PARENT  FMT  PROT  LOCK  STATUS", "{listing}");
    assert!(rows[1].starts_with("broken       ?") && rows[1].ends_with("  degraded"), "{listing}");
    assert!(rows[2].starts_with("healthy  4 MiB") && rows[2].ends_with("  OK"), "{listing}");
    let info = s.ok(&["info", "broken"]);
    assert!(info.contains("\tstatus: degraded (its information cannot be read: a layer file of image"), "{info}");
    let json = s.json(&["info", "--format", "json", "broken"]);
    assert_eq!(json["status"], "degraded", "{json}");
}

#[test]
fn alerts_lists_a_failed_task() {
    let s = Server::start();
    // The host's disk may itself be nearly full: only the task alerts are this test's.
    let tasks = |json: &serde_json::Value| -> Vec<serde_json::Value> {
        let all = json.as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|a| a["id"].as_str().is_some_and(|id| id.starts_with("task_failed:"))).collect()
    };
    assert_eq!(tasks(&s.json(&["alerts", "--format", "json"])), Vec::<serde_json::Value>::new());
    s.ok(&["create", "--size", "4M", "rbd/plain"]);
    s.fails(&["flatten", "rbd/plain"], 22, "");
    let out = s.ok(&["alerts"]);
    let rows = lines(&out);
    assert!(
        rows[0].starts_with("SEVERITY  SINCE") && rows[0].contains("  SUMMARY  ") && rows[0].ends_with("DETAIL"),
        "{out}"
    );
    assert!(rows.iter().any(|r| r.starts_with("warning ") && r.contains("task rbd/flatten failed  ")), "{out}");
    let failed = tasks(&s.json(&["alerts", "--format", "json"]));
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["severity"], "warning");
    assert!(failed[0]["detail"].as_str().is_some_and(|d| d.contains("rbd/plain")), "{failed:?}");
}
