//! The trash: move, list, get, restore, remove with and without force, purge.

use basalt_ceph::{Image, TrashSource, no_progress};
use basalt_core::ErrorKind;

use crate::support::{self, env, kind, unique};

const MIB: u64 = 1 << 20;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

#[test]
fn trash_move_list_restore_remove() {
    let Some(env) = env("trash_move_list_restore_remove") else { return };
    let io = env.io();
    let name = unique("tr");
    support::create(&io, &name, 4 * MIB);
    let id = Image::open(&io, &name).expect("open").id().expect("id");

    io.trash_move(&name, 3600).expect("move to trash");
    assert_eq!(kind(Image::open(&io, &name)), ErrorKind::NotFound);
    assert!(!io.image_list().expect("list").iter().any(|entry| entry.name == name));
    let entry = io.trash_list().expect("trash list").into_iter().find(|entry| entry.id == id).expect("listed");
    assert_eq!((entry.name.as_str(), entry.source), (name.as_str(), TrashSource::User));
    let moved_at = entry.deletion_time.secs();
    assert!(moved_at.abs_diff(now()) < 600);
    assert_eq!(entry.deferment_end_time.secs(), moved_at + 3600);
    assert_eq!(io.trash_get(&id).expect("trash get"), entry);
    // Trashed images still open by id.
    assert_eq!(Image::open_by_id(&io, &id, None, true).expect("open by id").size().expect("size"), 4 * MIB);

    // Not expired: removal needs force.
    assert_eq!(kind(io.trash_remove(&id, false, &mut no_progress())), ErrorKind::NotPermitted);

    // Restore under the old name, and under a new one after a second move.
    io.trash_restore(&id, &name).expect("restore");
    assert!(io.trash_list().expect("trash list").iter().all(|entry| entry.id != id));
    Image::open(&io, &name).expect("restored image opens");
    io.trash_move(&name, 3600).expect("move again");
    let taken = unique("taken");
    support::create(&io, &taken, MIB);
    assert_eq!(kind(io.trash_restore(&id, &taken)), ErrorKind::AlreadyExists);
    let renamed = unique("restored");
    io.trash_restore(&id, &renamed).expect("restore renamed");
    assert_eq!(Image::open(&io, &renamed).expect("open").id().expect("id"), id);

    // Expired entries go without force; unexpired ones with it.
    io.trash_move(&renamed, 0).expect("move, no deferment");
    io.trash_remove(&id, false, &mut no_progress()).expect("remove expired entry");
    assert_eq!(kind(io.trash_get(&id)), ErrorKind::NotFound);
    io.trash_move(&taken, 3600).expect("move");
    let taken_id = io.trash_list().expect("list").into_iter().find(|e| e.name == taken).expect("listed").id;
    io.trash_remove(&taken_id, true, &mut no_progress()).expect("forced removal");
    assert_eq!(kind(io.trash_remove(&taken_id, true, &mut no_progress())), ErrorKind::NotFound);
    assert_eq!(kind(io.trash_restore("no-such-id", "x")), ErrorKind::NotFound);
}

#[test]
fn trash_purge_removes_only_expired_entries() {
    let Some(env) = env("trash_purge_removes_only_expired_entries") else { return };
    // A pool of its own, so the purge cannot touch other tests' trash.
    let pool = unique("trashpool");
    env.cluster.pool_create(&pool).expect("pool");
    let io = env.cluster.ioctx(&pool).expect("ioctx");
    io.application_enable("rbd", false).expect("tag");
    io.rbd_pool_init(false).expect("init");

    let (expired, kept) = (unique("expired"), unique("kept"));
    support::create(&io, &expired, MIB);
    support::create(&io, &kept, MIB);
    io.trash_move(&expired, 0).expect("move");
    io.trash_move(&kept, 3600).expect("move");
    let stats = io.rbd_pool_stats().expect("stats");
    assert_eq!((stats.images, stats.trash_images), (0, 2));

    let mut updates = 0;
    io.trash_purge(i64::try_from(now()).expect("time") + 1, -1.0, &mut |_, _| {
        updates += 1;
        std::ops::ControlFlow::Continue(())
    })
    .expect("purge");
    let left: Vec<String> = io.trash_list().expect("list").into_iter().map(|entry| entry.name).collect();
    assert_eq!(left, std::slice::from_ref(&kept));

    let id = io.trash_list().expect("list").remove(0).id;
    io.trash_remove(&id, true, &mut no_progress()).expect("remove");
    drop(io);
    env.cluster.pool_delete(&pool).expect("pool delete");
}
