//! The trash: deferment, restore, forced removal and purge.

use basalt_conformance::{for_each_backend, now};
use basalt_core::{CloneRequest, ErrorKind, ImageName, Progress, Timestamp, TrashForce};

use crate::{MIB, create, kind, read, write};

#[test]
fn trash_defers_removal_and_restores_with_the_data() {
    for_each_backend("c-trash", |t| {
        let e = &*t.backend;
        let loc = t.location("");
        create(t, "old", MIB);
        write(t, "old", 0, b"keep me");
        let later = Timestamp(now().0 + 3600);
        let id = e.trash_move(&t.spec("old"), later).expect("trash");
        assert!(e.image_list(&loc).expect("list").is_empty());
        assert_eq!(kind(e.image_info(&t.spec("old"))), ErrorKind::NotFound);
        let entries = e.trash_list(&loc).expect("trash list");
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].id.as_str(), entries[0].name.as_str()), (id.as_str(), "old"));
        // librbd takes a delay, not an end time, and adds it to its own clock: the end may come out a second late.
        assert!(entries[0].deferment_end_time.0.abs_diff(later.0) <= 1, "{:?} vs {later:?}", entries[0]);
        let err = e.trash_remove(&loc, &id, TrashForce::RespectDeferment, &Progress::default()).expect_err("deferred");
        assert_eq!(err.kind(), ErrorKind::NotPermitted);
        assert!(err.message().to_lowercase().contains("deferment time has not expired"), "{err}");
        // Restoring under a taken name is refused; under a new name it works and keeps the data.
        create(t, "old", MIB);
        assert_eq!(kind(e.trash_restore(&loc, &id, None)), ErrorKind::AlreadyExists);
        e.trash_restore(&loc, &id, Some(&ImageName::new("recovered").expect("name"))).expect("restore");
        assert_eq!(read(t, "recovered", 0, 7), b"keep me");
        assert_eq!(kind(e.trash_restore(&loc, &id, None)), ErrorKind::NotFound);
        // A forced removal ignores the deferment.
        let again = e.trash_move(&t.spec("recovered"), later).expect("trash again");
        e.trash_remove(&loc, &again, TrashForce::Force, &Progress::default()).expect("forced remove");
        assert!(e.trash_list(&loc).expect("list").is_empty());
    });
}

#[test]
fn purge_removes_expired_entries_and_skips_parents_of_clones() {
    for_each_backend("c-purge", |t| {
        let e = &*t.backend;
        let loc = t.location("");
        create(t, "tmpl", MIB);
        e.snap_create(&t.snap("tmpl@s")).expect("snap");
        e.snap_protect(&t.snap("tmpl@s")).expect("protect");
        e.clone_image(&t.snap("tmpl@s"), &t.spec("child"), &CloneRequest::inherit()).expect("clone");
        create(t, "young", MIB);
        create(t, "expired", MIB);
        let past = Timestamp(now().0 - 10);
        let tmpl_id = e.trash_move(&t.spec("tmpl"), past).expect("trash the parent");
        let young_id = e.trash_move(&t.spec("young"), Timestamp(now().0 + 7200)).expect("trash unexpired");
        let expired_id = e.trash_move(&t.spec("expired"), past).expect("trash expired");
        // The clone still reads through its trashed parent.
        assert!(e.image_info(&t.spec("child")).expect("info").parent.expect("parent").in_trash);

        let report = e.trash_purge(&t.pool, now(), &Progress::default()).expect("purge");
        assert_eq!(report.removed, [expired_id]);
        assert_eq!(report.skipped.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [tmpl_id.as_str()]);
        let left: Vec<String> = e.trash_list(&loc).expect("list").into_iter().map(|entry| entry.id).collect();
        assert!(left.contains(&tmpl_id) && left.contains(&young_id) && left.len() == 2, "{left:?}");

        // Once the clone is flattened and the snapshot gone, the parent purges too.
        e.flatten(&t.spec("child"), &Progress::default()).expect("flatten");
        e.trash_restore(&loc, &tmpl_id, None).expect("restore the template");
        e.snap_unprotect(&t.snap("tmpl@s")).expect("unprotect");
        e.snap_remove(&t.snap("tmpl@s")).expect("remove snapshot");
        let tmpl_id = e.trash_move(&t.spec("tmpl"), past).expect("trash again");
        let report = e.trash_purge(&t.pool, now(), &Progress::default()).expect("purge");
        assert_eq!(report.removed, [tmpl_id]);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        e.trash_remove(&loc, &young_id, TrashForce::Force, &Progress::default()).expect("forced remove");
    });
}
