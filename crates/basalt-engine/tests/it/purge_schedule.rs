//! Trash purge schedules on the embedded engine, on a manual clock: nothing is purged without a schedule, a due
//! schedule purges the expired entries of its own pool or namespace only, and the last run survives a reopen so a
//! restart neither repeats a run nor loses the next one.

use std::sync::Arc;

use basalt_core::{
    Backend, CreateOptions, ErrorKind, ImageSpec, ManualClock, PoolName, PoolNs, ScheduleInterval, ScheduleItem,
    ScheduleLevel, ScheduleStartTime, Timestamp,
};
use basalt_engine::Engine;

/// 2023-11-14T22:13:20Z.
const START: u64 = 1_700_000_000;
/// The first whole hour after START.
const NEXT_HOUR: u64 = 1_700_002_800;

fn item(interval: &str, start: Option<&str>) -> ScheduleItem {
    ScheduleItem {
        interval: ScheduleInterval::parse(interval).expect("interval"),
        start_time: start.map(|s| ScheduleStartTime::parse(s).expect("start time")),
    }
}

fn location(s: &str) -> PoolNs {
    PoolNs::parse(s).expect("location")
}

fn trash(e: &Engine, spec: &str, deferment_end: u64) -> String {
    let spec = ImageSpec::parse(spec).expect("spec");
    e.image_create(&spec, &CreateOptions::with_size(1 << 20)).expect("create");
    e.trash_move(&spec, Timestamp(deferment_end)).expect("trash")
}

fn ids(e: &Engine, at: &str) -> Vec<String> {
    let mut ids: Vec<String> = e.trash_list(&location(at)).expect("trash list").into_iter().map(|t| t.id).collect();
    ids.sort();
    ids
}

#[test]
fn schedules_purge_only_their_namespace_when_due_and_remember_their_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let e = Engine::open(&root, clock.clone()).expect("open");
    for pool in ["rbd", "other"] {
        let pool = PoolName::new(pool).expect("pool");
        e.pool_create(&pool).expect("pool");
        e.pool_application_enable(&pool, "rbd").expect("tag");
    }
    e.namespace_create(&location("rbd/t")).expect("namespace");
    let a = trash(&e, "rbd/a", START);
    let b = trash(&e, "rbd/t/b", START);
    let c = trash(&e, "rbd/t/c", START + 10 * 86_400);
    let d = trash(&e, "other/d", START);

    // Off by default: however late it is, nothing is due and nothing goes.
    assert!(e.trash_purge_schedule_run_due(Timestamp(START + 30 * 86_400)).expect("run").is_empty());
    assert!(e.trash_purge_schedule_status(&ScheduleLevel::global()).expect("status").is_empty());
    assert_eq!(ids(&e, "rbd/t").len(), 2);

    let ns = ScheduleLevel::parse("rbd/t").expect("level");
    e.trash_purge_schedule_add(&ns, &item("1h", None)).expect("add");
    e.trash_purge_schedule_add(&ns, &item("1h", None)).expect("adding it again changes nothing");
    let listed = e.trash_purge_schedule_list(&ns, false).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].items, vec![item("1h", None)]);
    let status = e.trash_purge_schedule_status(&ScheduleLevel::global()).expect("status");
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].location.to_string(), status[0].next_run), ("rbd/t".to_owned(), Timestamp(NEXT_HOUR)));

    // Not before its time; then only the expired entry of its namespace.
    assert!(e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR - 1)).expect("run").is_empty());
    let runs = e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR)).expect("run");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, location("rbd/t"));
    assert_eq!(runs[0].1.as_ref().expect("purge").removed, vec![b.clone()]);
    assert_eq!(ids(&e, "rbd/t"), vec![c.clone()]);
    assert_eq!(ids(&e, "rbd"), vec![a.clone()]);
    assert_eq!(ids(&e, "other"), vec![d.clone()]);
    assert!(e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR + 60)).expect("run").is_empty(), "ran twice");

    // A restart keeps the last run: no second run in the same slot, and the next slot still comes.
    drop(e);
    let e = Engine::open(&root, clock.clone()).expect("reopen");
    assert!(e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR + 120)).expect("run").is_empty());
    let status = e.trash_purge_schedule_status(&ns).expect("status");
    assert_eq!(status[0].next_run, Timestamp(NEXT_HOUR + 3600));
    // Several missed slots make one run, not one per slot.
    assert_eq!(e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR + 5 * 3600)).expect("run").len(), 1);
    assert!(e.trash_purge_schedule_run_due(Timestamp(NEXT_HOUR + 5 * 3600 + 60)).expect("run").is_empty());

    // A pool-level schedule covers the pool's namespaces that have none of their own, aligned to its start time.
    let other = ScheduleLevel::parse("other").expect("level");
    clock.advance(86_400);
    e.trash_purge_schedule_add(&other, &item("1d", Some("02:00"))).expect("add");
    let next = e.trash_purge_schedule_status(&other).expect("status")[0].next_run;
    assert_eq!(next.secs() % 86_400, 2 * 3600, "aligned to 02:00 UTC");
    let runs = e.trash_purge_schedule_run_due(next).expect("run");
    let ran: Vec<String> = runs.iter().map(|(at, _)| at.to_string()).collect();
    assert_eq!(ran, ["other", "rbd/t"], "the hourly namespace schedule is due too");
    assert_eq!(runs[0].1.as_ref().expect("purge").removed, vec![d]);
    assert_eq!(ids(&e, "rbd"), vec![a], "pool rbd has no schedule that applies to its default namespace");

    // Listing: recursive from the global level shows both; removal needs something to remove.
    let all = e.trash_purge_schedule_list(&ScheduleLevel::global(), true).expect("list");
    assert_eq!(all.iter().map(|s| s.level.to_string()).collect::<Vec<_>>(), ["other", "rbd/t"]);
    assert!(e.trash_purge_schedule_list(&ScheduleLevel::global(), false).expect("list").is_empty());
    let kind = |r: basalt_core::Result<()>| r.expect_err("refused").kind();
    assert_eq!(kind(e.trash_purge_schedule_remove(&ns, Some(&item("2h", None)))), ErrorKind::NotFound);
    assert_eq!(
        kind(e.trash_purge_schedule_remove(&ScheduleLevel::parse("rbd").expect("l"), None)),
        ErrorKind::NotFound
    );
    let missing_pool = ScheduleLevel::parse("nope").expect("level");
    assert_eq!(kind(e.trash_purge_schedule_add(&missing_pool, &item("1d", None))), ErrorKind::NotFound);
    let missing_ns = ScheduleLevel::parse("rbd/nope").expect("level");
    assert_eq!(kind(e.trash_purge_schedule_add(&missing_ns, &item("1d", None))), ErrorKind::NotFound);
    e.trash_purge_schedule_remove(&ns, Some(&item("1h", None))).expect("remove the item");
    assert!(e.trash_purge_schedule_list(&ns, false).expect("list").is_empty());
    // Removing a namespace or a pool removes its schedules.
    e.trash_purge_schedule_add(&ns, &item("1h", None)).expect("add");
    e.trash_remove(&location("rbd/t"), &c, basalt_core::TrashForce::Force, &Default::default()).expect("rm");
    e.namespace_remove(&location("rbd/t")).expect("remove namespace");
    e.namespace_create(&location("rbd/t")).expect("namespace again");
    assert!(e.trash_purge_schedule_list(&ns, false).expect("list").is_empty(), "a stale schedule came back");
}
