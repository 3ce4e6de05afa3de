//! A full disk: data writes that need space fail with ENOSPC one request at a time, while overwrites, reads,
//! flushes, checkpoints (a full journal), control operations, snapshot removal and image removal keep working, the
//! store never stops, and removals give space back. Run on the simulated disk with a capacity (then a power cut
//! loses nothing that was flushed) and on a small tmpfs (then a reopen finds everything).

use std::path::Path;
use std::sync::Arc;

use basalt_core::{
    Backend, Clock, CreateOptions, Durability, ErrorKind, ImageIo, ImageSpec, ManualClock, OpenTarget, PoolName,
    Progress, SnapName, SnapSpec, Timestamp,
};
use basalt_engine::fsck::fsck_vfs;
use basalt_engine::sim::{CrashSurvivors, SimVfs};
use basalt_engine::vfs::Vfs;
use basalt_engine::{Engine, EngineOptions};

const ROOT: &str = "/store";
const MIB: u64 = 1 << 20;
const KIB: usize = 1024;

fn open(vfs: &SimVfs) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let vfs: Arc<dyn Vfs> = Arc::new(vfs.clone());
    Engine::open_with_vfs(vfs, Path::new(ROOT), clock).expect("open")
}

/// Creates pool `rbd`, tagged for rbd.
fn add_rbd_pool(engine: &Engine) {
    let pool = PoolName::new("rbd").expect("pool");
    engine.pool_create(&pool).expect("pool");
    engine.pool_application_enable(&pool, "rbd").expect("tag");
}

fn spec(name: &str) -> ImageSpec {
    ImageSpec::parse(&format!("rbd/{name}")).expect("spec")
}

fn fill(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8)).collect()
}

/// Writes `data` at `offset` and keeps the model in step when the write was acknowledged.
fn write(io: &dyn ImageIo, model: &mut [u8], offset: u64, data: &[u8]) -> basalt_core::Result<()> {
    io.write(offset, data, Durability::Buffered)?;
    model[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    Ok(())
}

fn read_all(io: &dyn ImageIo) -> Vec<u8> {
    let mut buf = vec![0u8; io.size_bytes() as usize];
    io.read(0, &mut buf).expect("read");
    buf
}

fn assert_no_space(result: basalt_core::Result<()>, what: &str) {
    match result {
        Err(e) if e.kind() == ErrorKind::NoSpace => {}
        other => panic!("{what}: expected ENOSPC, got {other:?}"),
    }
}

/// Sizes of one run of the scenario.
struct Scale {
    /// The image that fills the disk.
    image: u64,
    /// Bytes a snapshot keeps and the head then overwrites (what removing the snapshot frees).
    snapped: usize,
    /// Bytes of the image that is removed.
    other: usize,
    /// Free bytes left before filling.
    slack: u64,
    /// Large writes while filling.
    chunk: usize,
    /// 4 KiB overwrites enough to fill the journal twice over.
    journal_writes: u64,
}

/// The disk under test: how much is free, and how to leave only `slack` bytes free.
trait Disk {
    fn free(&self) -> u64;
    fn leave_free(&self, slack: u64);
}

impl Disk for SimVfs {
    fn free(&self) -> u64 {
        self.free_bytes()
    }

    fn leave_free(&self, slack: u64) {
        self.set_capacity(Some(self.used_bytes() + slack));
    }
}

/// Runs the scenario on an empty store; returns what the image `vm` must read.
fn scenario(engine: &Engine, disk: &dyn Disk, scale: &Scale) -> Vec<u8> {
    add_rbd_pool(engine);
    engine.image_create(&spec("vm"), &CreateOptions::with_size(scale.image)).expect("create vm");
    engine.image_create(&spec("other"), &CreateOptions::with_size(scale.other as u64)).expect("create other");
    let mut model = vec![0u8; scale.image as usize];
    let io = engine.open(&spec("vm"), &OpenTarget::Head, "t").expect("open vm");
    // Data that a snapshot keeps, then overwritten in the head: removing the snapshot frees it.
    write(io.as_ref(), &mut model, 0, &fill(1, scale.snapped)).expect("write");
    let s1 = SnapSpec { image: spec("vm"), snap: SnapName::new("s1").expect("name") };
    engine.snap_create(&s1).expect("snapshot");
    let at_s1 = model.clone();
    write(io.as_ref(), &mut model, 0, &fill(2, scale.snapped)).expect("overwrite");
    {
        let other = engine.open(&spec("other"), &OpenTarget::Head, "t").expect("open other");
        other.write(0, &fill(3, scale.other), Durability::Buffered).expect("write other");
        other.flush().expect("flush other");
    }
    io.flush().expect("flush");

    // Fill what is left with new data until the disk says no.
    disk.leave_free(scale.slack);
    let mut offset = scale.snapped as u64;
    let mut chunk = scale.chunk;
    let mut filled = 0u64;
    loop {
        match write(io.as_ref(), &mut model, offset, &fill(4 + (offset / MIB) as u8, chunk)) {
            Ok(()) => {
                offset += chunk as u64;
                filled += chunk as u64;
            }
            Err(e) if e.kind() == ErrorKind::NoSpace && chunk > 4 * KIB => chunk = 4 * KIB,
            Err(e) if e.kind() == ErrorKind::NoSpace => break,
            Err(e) => panic!("filling the disk failed with {e} instead of ENOSPC"),
        }
        assert!(offset < scale.image, "the disk never filled up");
    }
    assert!(filled >= scale.slack / 2, "only {filled} bytes fitted");
    assert!(disk.free() < 4096, "{} bytes still free", disk.free());

    // New data fails per request, every time; the failed writes left no space behind.
    for _ in 0..3 {
        assert_no_space(io.write(offset, &fill(9, 8192), Durability::Buffered), "a write of new blocks");
        assert_no_space(io.write(offset + 100, &fill(9, 100), Durability::Buffered), "a partial new block");
    }
    assert!(disk.free() < 4096, "{} bytes free after failed writes", disk.free());
    // Overwrites of blocks the head owns keep working, whole or partial, and so do reads and flushes.
    write(io.as_ref(), &mut model, 8192, &fill(10, 16 * KIB)).expect("overwrite in place");
    let partial = scale.snapped as u64 + 1000;
    write(io.as_ref(), &mut model, partial, &fill(11, 3000)).expect("partial overwrite in place");
    io.flush().expect("flush on a full disk");
    assert!(read_all(io.as_ref()) == model, "the head reads what was acknowledged");
    {
        let snap = engine.open(&spec("vm"), &OpenTarget::Snapshot(s1.snap.clone()), "t").expect("open s1");
        assert!(read_all(snap.as_ref()) == at_s1, "the snapshot reads what it froze");
    }

    // Metadata commits on the full disk: enough overwrites to fill the journal, which forces checkpoints, and
    // control operations. Each takes redb pages the disk no longer has.
    let blocks_owned = (scale.snapped as u64 / 8192).min(256);
    for i in 0..scale.journal_writes {
        let at = (i % blocks_owned) * 8192;
        write(io.as_ref(), &mut model, at, &fill(12 + (i % 7) as u8, 4096)).expect("overwrite filling the journal");
    }
    io.flush().expect("flush");
    for i in 0..20 {
        engine.image_metadata_set(&spec("vm"), &format!("key{i}"), &"v".repeat(2000)).expect("metadata on a full disk");
    }
    engine.image_create(&spec("new"), &CreateOptions::with_size(MIB)).expect("create an image on a full disk");
    let other_snap = SnapSpec { image: spec("other"), snap: SnapName::new("o1").expect("name") };
    engine.snap_create(&other_snap).expect("snapshot on a full disk");
    let reserve = engine.metadata_reserve();
    assert!(reserve.releases > 0, "the metadata store never needed the reserve: {reserve:?}");
    assert!(reserve.held < reserve.size);
    assert_no_space(io.write(offset, &fill(9, 4096), Durability::Buffered), "new data while the reserve is low");

    // Removing the snapshot gives back what only it held; the reserve refills first, then data fits again.
    let free = disk.free();
    engine.snap_remove(&s1).expect("snapshot removal on a full disk");
    let freed = disk.free() + (reserve.size - reserve.held) - free;
    assert!(freed >= scale.snapped as u64 * 7 / 8, "the snapshot removal freed {freed} bytes");
    let reserve = engine.metadata_reserve();
    assert_eq!(reserve.held, reserve.size, "the reserve refilled: {reserve:?}");
    write(io.as_ref(), &mut model, offset, &fill(13, 64 * KIB)).expect("new data after the snapshot removal");
    offset += 64 * KIB as u64;

    // Removing an image gives back its space too.
    let free = disk.free();
    engine.snap_remove(&other_snap).expect("remove the other image's snapshot");
    engine.image_remove(&spec("other"), &Progress::new()).expect("image removal on a full disk");
    let freed = disk.free() - free;
    assert!(freed >= scale.other as u64 * 3 / 4, "the image removal freed {freed} bytes");
    write(io.as_ref(), &mut model, offset, &fill(14, scale.other / 2)).expect("new data after the image removal");
    io.flush().expect("flush");
    assert!(read_all(io.as_ref()) == model);
    engine.image_metadata_set(&spec("vm"), "after", "1").expect("the store still takes changes");
    model
}

fn check_reopened(engine: &Engine, model: &[u8]) {
    let io = engine.open(&spec("vm"), &OpenTarget::Head, "t").expect("open after the restart");
    assert!(read_all(io.as_ref()) == model, "acknowledged data was lost");
    assert!(engine.image_info(&spec("other")).is_err(), "the removed image came back");
}

#[test]
fn a_full_simulated_disk_fails_new_data_per_request_and_everything_else_keeps_working() {
    let vfs = SimVfs::new();
    let engine = open(&vfs);
    let scale = Scale {
        image: 16 * MIB,
        snapped: 2 * MIB as usize,
        other: 2 * MIB as usize,
        slack: 3 * MIB,
        chunk: 64 * KIB,
        journal_writes: 600,
    };
    let model = scenario(&engine, &vfs, &scale);
    // A power cut now (no unsynced write survives) loses nothing that was flushed.
    let crashed = vfs.after_crash(CrashSurvivors::None);
    drop(engine);
    let report = fsck_vfs(Arc::new(crashed.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "fsck after the power cut: {:?}", report.errors);
    check_reopened(&open(&crashed), &model);
}

/// A tmpfs of a given size mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Disk for Tmpfs {
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a statvfs struct is plain integers, for which all zeros is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs fills the struct it is given; the path is a valid C string.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// The mount's size is fixed: fill it down to `slack` with a file that stays.
    fn leave_free(&self, slack: u64) {
        let ballast = self.free().saturating_sub(slack);
        let file = std::fs::File::create(self.path().join("ballast")).expect("ballast");
        file.set_len(ballast).expect("ballast length");
        let zeros = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < ballast {
            let n = (ballast - done).min(zeros.len() as u64);
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros[..n as usize], done).expect("ballast write");
            done += n;
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = std::process::Command::new("umount").arg(self.dir.path()).output();
        if !out.is_ok_and(|o| o.status.success()) {
            // Lazily, so the mount never outlives the test process's view of it.
            let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).output();
        }
    }
}

#[test]
fn a_full_tmpfs_fails_new_data_per_request_and_everything_else_keeps_working() {
    let tmpfs = match Tmpfs::mount(64 * MIB) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: a full-disk test on a real file system needs a tmpfs mount: {why}");
            return;
        }
    };
    let root = tmpfs.path().join("store");
    let options = EngineOptions {
        journal_file_size: 2 * MIB,
        checkpoint_interval: None,
        metadata_cache_bytes: 4 << 20,
        metadata_reserve: 2 * MIB,
        ..EngineOptions::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let os: Arc<dyn Vfs> = Arc::new(basalt_engine::vfs::OsVfs);
    let engine = Engine::open_with_options(os.clone(), &root, clock.clone(), options).expect("open");
    let scale = Scale {
        image: 64 * MIB,
        snapped: 4 * MIB as usize,
        other: 4 * MIB as usize,
        slack: 12 * MIB,
        chunk: 256 * KIB,
        journal_writes: 1200,
    };
    let model = scenario(&engine, &tmpfs, &scale);
    drop(engine);
    let report = basalt_engine::fsck::fsck(&root).expect("fsck");
    assert!(report.is_clean(), "fsck: {:?}", report.errors);
    check_reopened(&Engine::open_with_options(os, &root, clock, options).expect("reopen"), &model);
}

/// A copy (or deep copy) that runs out of space gives back what it had written: nothing was published, so no
/// image holds that space and no removal could free it.
#[test]
fn a_copy_that_runs_out_of_space_gives_its_space_back() {
    let vfs = SimVfs::new();
    let engine = open(&vfs);
    add_rbd_pool(&engine);
    engine.image_create(&spec("src"), &CreateOptions::with_size(4 * MIB)).expect("create src");
    {
        let io = engine.open(&spec("src"), &OpenTarget::Head, "t").expect("open src");
        io.write(0, &fill(1, 2 * MIB as usize), Durability::Buffered).expect("write src");
        io.flush().expect("flush");
    }
    let s1 = SnapSpec { image: spec("src"), snap: SnapName::new("s1").expect("name") };
    engine.snap_create(&s1).expect("snapshot");
    // Room for the first of the copy's 1 MiB chunks, not for the second.
    vfs.set_capacity(Some(vfs.used_bytes() + 3 * MIB / 2));
    let before = vfs.used_bytes();
    // The metadata store may grow by a few pages; what the copy wrote is a whole MiB.
    let kept = || vfs.used_bytes().saturating_sub(before);
    let slack = 64 * KIB as u64;
    let request =
        basalt_core::CopyRequest { dest: spec("dst"), snap: None, order: None, striping: None, features: None };
    let copied = engine.image_copy(&spec("src"), &request, &Progress::new());
    assert_eq!(copied.map_err(|e| e.kind()), Err(ErrorKind::NoSpace), "the copy does not fit");
    assert!(engine.image_info(&spec("dst")).is_err(), "a failed copy publishes nothing");
    assert!(kept() <= slack, "the failed copy kept {} bytes", kept());
    let deep = engine.image_deep_copy(&spec("src"), &spec("deep"), &Progress::new());
    assert_eq!(deep.map_err(|e| e.kind()), Err(ErrorKind::NoSpace), "the deep copy does not fit");
    assert!(engine.image_info(&spec("deep")).is_err(), "a failed deep copy publishes nothing");
    assert!(kept() <= slack, "the failed deep copy kept {} bytes", kept());
    drop(engine);
    let report = fsck_vfs(Arc::new(vfs.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    assert!(report.notes.is_empty(), "nothing was left behind: {:?}", report.notes);
}

/// A snapshot removal whose fold runs out of space (it copies blocks into the other layer first) still succeeds,
/// and takes no space: what the fold had copied before it stopped is covered by the layer it came from, so it is
/// given back, as what the removal frees is.
#[test]
fn a_fold_that_runs_out_of_space_gives_back_what_it_copied() {
    let vfs = SimVfs::new();
    let engine = open(&vfs);
    add_rbd_pool(&engine);
    engine.image_create(&spec("vm"), &CreateOptions::with_size(8 * MIB)).expect("create");
    let io = engine.open(&spec("vm"), &OpenTarget::Head, "t").expect("open");
    let mut model = fill(1, 4 * MIB as usize);
    model.resize(8 * MIB as usize, 0);
    io.write(0, &model[..4 * MIB as usize], Durability::Buffered).expect("write");
    let s1 = SnapSpec { image: spec("vm"), snap: SnapName::new("s1").expect("name") };
    engine.snap_create(&s1).expect("snapshot");
    // The head's own data lies beside the snapshot's, so the fold must copy it (the smaller layer) down: a block
    // in every other one, a copy each.
    for i in 0..256u64 {
        let at = 4 * MIB + i * 8192;
        let block = fill((i as u8).wrapping_add(2), 4096);
        io.write(at, &block, Durability::Buffered).expect("write the head");
        model[at as usize..at as usize + 4096].copy_from_slice(&block);
    }
    io.flush().expect("flush");
    // Room for about half of what the fold copies.
    vfs.set_capacity(Some(vfs.used_bytes() + MIB / 2));
    let before = vfs.used_bytes();
    engine.snap_remove(&s1).expect("the removal succeeds when its fold finds no space");
    let grown = vfs.used_bytes().saturating_sub(before);
    assert!(grown <= 64 * KIB as u64, "the removal took {grown} bytes of the full disk");
    assert!(read_all(io.as_ref()) == model, "the head reads what was written");
    drop(io);
    drop(engine);
    let report = fsck_vfs(Arc::new(vfs.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
    let engine = open(&vfs);
    let io = engine.open(&spec("vm"), &OpenTarget::Head, "t").expect("open");
    assert!(read_all(io.as_ref()) == model, "the head after reopening");
}

/// An overwrite in place that fails for lack of space rewrites the crcs of the blocks it owns from what the file
/// holds, whichever sidecar pages the rest of its range would have needed. Here one write covers a new block, whose
/// crc needs a sidecar page the file does not have yet, and an owned block whose crc is in the next page (objects
/// of 8 MiB span two pages of crcs): the data fits, the crcs do not. The rewrite of the crcs went out as one write
/// over both pages, which failed at the first just as the write had, so the owned block kept its new bytes under its
/// old crc and read as damaged (EIO, the image degraded) though nothing was.
#[test]
fn a_failed_overwrite_rewrites_the_crcs_of_its_owned_blocks_past_a_sidecar_page_it_could_not_allocate() {
    let vfs = SimVfs::new();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp(1_700_000_000)));
    let options = EngineOptions { segment_shift: 43, ..EngineOptions::deterministic() };
    let engine = Engine::open_with_options(Arc::new(vfs.clone()), Path::new(ROOT), clock, options).expect("open");
    add_rbd_pool(&engine);
    let mut create = CreateOptions::with_size(16 * MIB);
    create.order = Some(basalt_core::ObjectOrder::new(23).expect("order"));
    engine.image_create(&spec("vm"), &create).expect("create");
    let io = engine.open(&spec("vm"), &OpenTarget::Head, "t").expect("open");
    // Block 1024, the first of the object's second half, is the layer's own; its crc is in the sidecar's second
    // page. Block 1023 (crc in the first page, which nothing has written) is new.
    let owned = 4 * MIB;
    let old = fill(1, 4 * KIB);
    io.write(owned, &old, Durability::Buffered).expect("write the owned block");
    io.flush().expect("flush");
    // Room for one block of data, not for a page of crcs as well.
    vfs.leave_free(4 * KIB as u64);
    let new = fill(2, 8 * KIB);
    assert_no_space(io.write(owned - 4 * KIB as u64, &new, Durability::Buffered), "the write across both pages");
    vfs.set_capacity(None);
    let mut back = vec![0u8; 4 * KIB];
    io.read(owned, &mut back).expect("the owned block reads (old, new or mixed bytes), never as damaged");
    assert!(back == old || back == new[4 * KIB..], "the owned block holds its old or its new bytes");
    assert!(engine.checksum_errors().is_empty(), "no damage counted: {:?}", engine.checksum_errors());
    drop(io);
    drop(engine);
    let report = fsck_vfs(Arc::new(vfs.clone()), Path::new(ROOT)).expect("fsck");
    assert!(report.is_clean(), "{:?}", report.errors);
}
