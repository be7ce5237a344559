//! `faultfs [--fsync-delay-ms N] <backing-dir> <mountpoint>`: a FUSE passthrough filesystem that drops every write
//! not yet fsync'd when it gets `SIGUSR1` (a simulated power loss).
//!
//! Why: `kill -9` cannot prove that a server fsyncs before it acknowledges, because the page
//! cache survives the killed process. See the crate docs (`src/lib.rs`) and `docs/faultfs.md`.
//!
//! Protocol on stdout: `ready` once mounted; after each `SIGUSR1`, one line
//! `dropped bytes=B synced_len=S path=P` per file that lost data (P relative to the backing dir),
//! then exactly one `crashed files=N bytes=M`.
//! `SIGTERM`/`SIGINT`/`SIGHUP` unmount and exit 0. A forked watchdog unmounts if the process dies
//! any other way (SIGKILL included).

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use fuser::{Config, INodeNo, MountOption};
use ringchat_faultfs::FaultFs;

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// True if `mountpoint` is mounted as a faultfs filesystem now.
fn faultfs_mounted(mountpoint: &std::path::Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // `... mountpoint ... - fstype source ...`; fstype is `fuse` or `fuse.faultfs`.
        let mut tail = f.iter().skip_while(|x| **x != "-").skip(1);
        let (fstype, source) = (tail.next(), tail.next());
        f.get(4) == Some(&want.as_ref()) && fstype.is_some_and(|t| t.starts_with("fuse")) && source == Some(&"faultfs")
    })
}

/// Lazily unmounts `mountpoint` (busy files do not block it).
fn unmount(mountpoint: &CString) -> std::io::Result<()> {
    // SAFETY: `mountpoint` is a valid NUL-terminated path.
    if unsafe { libc::umount2(mountpoint.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Forks a watchdog that unmounts `mountpoint` once this process is gone, however it ends
/// (SIGKILL included): it waits for EOF on a pipe whose write end only this process holds.
/// Must run before any thread exists.
fn spawn_watchdog(mountpoint: &std::path::Path) -> anyhow::Result<()> {
    let c = CString::new(mountpoint.as_os_str().as_bytes())?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    anyhow::ensure!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0, "pipe2");
    let [read_end, write_end] = fds;
    // SAFETY: the process is single-threaded here, so the child may run ordinary code.
    let pid = unsafe { libc::fork() };
    anyhow::ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // Child: no stdout (the parent's `ready`/`crashed` protocol), default signal mask.
        // SAFETY: plain descriptor and signal-mask calls on valid arguments.
        unsafe {
            libc::close(write_end);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
            }
            let mut byte = 0u8;
            while libc::read(read_end, (&mut byte as *mut u8).cast(), 1) < 0 {}
        }
        if faultfs_mounted(mountpoint) {
            let _ = unmount(&c);
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    // Parent: keep the write end open for the rest of its life.
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(read_end) };
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut fsync_delay = Duration::ZERO;
    if args.first().is_some_and(|a| a == "--fsync-delay-ms") && args.len() > 1 {
        let ms: u64 = args[1]
            .to_str()
            .and_then(|v| v.parse().ok())
            .context("--fsync-delay-ms takes a number")?;
        fsync_delay = Duration::from_millis(ms);
        args.drain(..2);
    }
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: faultfs [--fsync-delay-ms N] <backing-dir> <mountpoint>");
        std::process::exit(2);
    };
    let (backing, mountpoint) = (PathBuf::from(backing), PathBuf::from(mountpoint));
    let mountpoint =
        std::fs::canonicalize(&mountpoint).with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let fs = FaultFs::new(&backing, fsync_delay).with_context(|| format!("backing dir {}", backing.display()))?;
    spawn_watchdog(&mountpoint)?;
    // Block the signals before any thread exists, so every thread inherits the mask and only
    // `sigwait` below sees them (no async signal handler).
    let set = signal_set();
    // SAFETY: `set` is a valid signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "pthread_sigmask failed: {rc}");

    let handle = fs.handle();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("faultfs".into()),
        MountOption::Subtype("faultfs".into()),
    ];
    // Enough workers that fsyncs sleeping out their delay do not stall other requests.
    config.n_threads = Some(8);
    let session =
        fuser::spawn_mount(fs, &mountpoint, &config).with_context(|| format!("mount on {}", mountpoint.display()))?;
    let notifier = session.notifier();
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;

    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` and `sig` are valid for the call.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        anyhow::ensure!(rc == 0, "sigwait failed: {rc}");
        if sig != libc::SIGUSR1 {
            break;
        }
        let report = handle.power_off().context("power off")?;
        for ino in &report.inodes {
            // Drop the kernel's cached pages and attributes of every file that changed; an
            // inode the kernel no longer knows answers ENOENT, which is fine.
            let _ = notifier.inval_inode(INodeNo(*ino), 0, 0);
        }
        for (path, bytes, synced_len) in &report.dropped {
            writeln!(
                out,
                "dropped bytes={bytes} synced_len={synced_len} path={}",
                path.display()
            )?;
        }
        writeln!(out, "crashed files={} bytes={}", report.files, report.bytes)?;
        out.flush()?;
    }

    // Unmount lazily; the session threads end when the kernel closes the connection. Bounded:
    // a stuck session must not keep the process alive.
    let c = CString::new(mountpoint.as_os_str().as_bytes())?;
    if let Err(e) = unmount(&c) {
        eprintln!("faultfs: unmount {}: {e}", mountpoint.display());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(session.join());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("faultfs: session ended with {e}"),
        Err(_) => eprintln!("faultfs: session did not end within 10 s after unmount; exiting"),
    }
    Ok(())
}
