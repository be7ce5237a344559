//! The real binary on a real FUSE mount: a simulated power loss keeps exactly the synced data.
//! These tests prove the layer can fail a durability test: data that was written but not
//! fsync'd is gone after `power_off`, while a kill -9 alone would have kept it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringchat_faultfs::harness::{can_run, is_mounted, Crash, FaultFsProcess};

fn start(dir: &Path) -> FaultFsProcess {
    let (backing, mnt) = (dir.join("backing"), dir.join("mnt"));
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    FaultFsProcess::start(Path::new(env!("CARGO_BIN_EXE_faultfs")), &backing, &mnt).expect("faultfs mounts")
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

#[test]
fn power_off_drops_exactly_the_unsynced_writes() {
    if !can_run("power_off_drops_exactly_the_unsynced_writes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ffs = start(dir.path());
    let m = ffs.mountpoint.clone();
    let synced_a: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();

    // A: written and fsync'd.
    let mut a = rw(&m.join("a"));
    a.write_all(&synced_a).unwrap();
    a.sync_all().unwrap();
    // B: written, never synced.
    let mut b = rw(&m.join("b"));
    b.write_all(&[7u8; 3000]).unwrap();
    // A: append 1234 bytes, then overwrite 100 bytes of its synced region, no sync.
    a.write_all(&[1u8; 1234]).unwrap();
    a.write_all_at(&[2u8; 100], 4000).unwrap();
    // A directory and a rename: metadata is durable at once in the modelled filesystem.
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d").join("tmp"), b"never synced").unwrap();
    fs::rename(m.join("d").join("tmp"), m.join("d").join("renamed")).unwrap();

    // The writes did reach the files (a kill -9 of the writer would keep all of them).
    assert_eq!(fs::metadata(m.join("a")).unwrap().len(), 5000 + 1234);
    assert_eq!(fs::read(m.join("a")).unwrap()[4000..4100], [2u8; 100]);
    assert_eq!(fs::read(m.join("b")).unwrap().len(), 3000);
    drop((a, b));

    let crash = ffs.power_off().unwrap();
    assert_eq!(
        (crash.files, crash.bytes),
        (3, 1234 + 100 + 3000 + 12),
        "a: appended 1234 + overwrote 100; b: 3000; d/renamed: 12"
    );
    let mut per_file = crash.per_file.clone();
    per_file.sort();
    assert_eq!(
        per_file,
        [
            ("a".to_string(), 1334),
            ("b".to_string(), 3000),
            ("d/renamed".to_string(), 12)
        ]
    );
    // Only synced data is left, seen through the mount and in the backing dir alike.
    for root in [&m, &ffs.backing] {
        assert_eq!(fs::read(root.join("a")).unwrap(), synced_a, "{}", root.display());
        assert_eq!(fs::metadata(root.join("b")).unwrap().len(), 0, "{}", root.display());
        assert_eq!(fs::metadata(root.join("d/renamed")).unwrap().len(), 0);
        assert!(!root.join("d/tmp").exists());
    }

    // Nothing unsynced since: a second power loss drops nothing.
    assert_eq!(ffs.power_off().unwrap(), Crash::default());

    // After the crash the mount keeps working; fdatasync counts as a sync too.
    let c = rw(&m.join("b"));
    c.write_all_at(b"durable", 0).unwrap();
    c.sync_data().unwrap();
    c.write_all_at(b"lost", 7).unwrap();
    drop(c);
    let crash = ffs.power_off().unwrap();
    assert_eq!((crash.files, crash.bytes, crash.bytes_in("b")), (1, 4, 4));
    assert_eq!(fs::read(m.join("b")).unwrap(), b"durable");

    let status = ffs.stop().expect("faultfs exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&ffs.mountpoint), "unmounted after SIGTERM");
}

#[test]
fn truncate_unlink_and_overwrites_on_a_synced_file_are_undone() {
    if !can_run("truncate_unlink_and_overwrites_on_a_synced_file_are_undone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ffs = start(dir.path());
    let m = ffs.mountpoint.clone();
    fs::write(m.join("log"), b"0123456789abcdef").unwrap();
    rw(&m.join("log")).sync_all().unwrap();
    // Truncate below the synced length, then write past it again; all unsynced.
    let f = rw(&m.join("log"));
    f.set_len(4).unwrap();
    f.write_all_at(b"XYZXYZXYZXYZXYZXYZXYZ", 4).unwrap();
    drop(f);
    // An unsynced file that is deleted again leaves nothing to undo.
    fs::write(m.join("gone"), b"short-lived").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    let crash = ffs.power_off().unwrap();
    assert_eq!(fs::read(m.join("log")).unwrap(), b"0123456789abcdef");
    assert_eq!(crash.files, 1);
    assert!(!m.join("gone").exists());
}

#[test]
fn a_killed_faultfs_leaves_no_mount_behind() {
    if !can_run("a_killed_faultfs_leaves_no_mount_behind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ffs = start(dir.path());
    let mnt: PathBuf = ffs.mountpoint.clone();
    // Hold a file open on the mount, so a plain umount would be busy.
    fs::write(mnt.join("open"), b"x").unwrap();
    let held = File::open(mnt.join("open")).unwrap();
    // SIGKILL faultfs itself (not through the harness): its watchdog must unmount.
    let pid = ffs.pid().expect("running");
    // SAFETY: plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&mnt), "watchdog unmounted {} after SIGKILL", mnt.display());
    drop(held);
    drop(ffs);
}

#[test]
fn an_fsync_whose_caller_is_killed_before_it_returns_makes_nothing_durable() {
    if !can_run("an_fsync_whose_caller_is_killed_before_it_returns_makes_nothing_durable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    // A slow disk: each fsync takes 1.5 s.
    let mut ffs = FaultFsProcess::start_with(
        Path::new(env!("CARGO_BIN_EXE_faultfs")),
        &backing,
        &mnt,
        Duration::from_millis(1500),
    )
    .unwrap();
    let m = ffs.mountpoint.clone();
    // A completed slow fsync is durable.
    let f = rw(&m.join("done"));
    f.write_all_at(b"synced", 0).unwrap();
    let t = Instant::now();
    f.sync_all().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "the fsync took the disk's time"
    );
    drop(f);
    // dd writes 4 KiB and fsyncs; it is SIGKILLed while the fsync is in flight.
    let mut dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", m.join("killed").display()))
        .args(["bs=4096", "count=1", "conv=fsync", "status=none"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::metadata(m.join("killed")).map(|md| md.len()).unwrap_or(0) < 4096 {
        assert!(Instant::now() < deadline, "dd did not write");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300)); // now inside the 1.5 s fsync
    dd.kill().unwrap();
    dd.wait().unwrap();
    let crash = ffs.power_off().unwrap();
    assert_eq!((crash.files, crash.bytes), (1, 4096), "{crash:?}");
    assert_eq!(fs::metadata(m.join("killed")).unwrap().len(), 0);
    assert_eq!(fs::read(m.join("done")).unwrap(), b"synced");
}
