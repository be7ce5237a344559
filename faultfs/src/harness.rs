//! Drives the `faultfs` binary from tests: mount, power off, stop — every wait bounded, and the
//! mount never left behind (Drop terminates the process and unmounts as a fallback).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Env var: when set (to anything but `0` or empty), a missing `/dev/fuse` or `fusermount3`
/// fails the fault tests instead of skipping them.
pub const REQUIRE_ENV: &str = "RINGCHAT_REQUIRE_FAULT_TESTS";

/// Where `fusermount3` is expected.
pub const FUSERMOUNT3: &str = "/usr/bin/fusermount3";

/// Why FUSE cannot be used here, if it cannot.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist".into());
    }
    if !Path::new(FUSERMOUNT3).exists() {
        return Some(format!("{FUSERMOUNT3} is missing (Debian package fuse3)"));
    }
    None
}

/// True when the fault tests must run (and fail rather than skip).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Returns true if `test` can run. Otherwise skips loudly, or panics if [`REQUIRE_ENV`] is set.
pub fn can_run(test: &str) -> bool {
    match fuse_unavailable() {
        None => true,
        Some(why) if required() => panic!("{test}: {why}, and {REQUIRE_ENV} is set"),
        Some(why) => {
            eprintln!(
                "\n!!!!!!!!!! SKIPPED {test}: {why}. Install fuse3 (and set {REQUIRE_ENV}=1 to make \
                 this a failure). !!!!!!!!!!\n"
            );
            false
        }
    }
}

/// What one power-off dropped: the counts of its `crashed files=N bytes=M` line and the
/// `dropped` lines before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crash {
    /// Files that lost unsynced data.
    pub files: u64,
    /// Unsynced bytes dropped.
    pub bytes: u64,
    /// `(path relative to the backing dir, bytes dropped)` per file.
    pub per_file: Vec<(String, u64)>,
}

impl Crash {
    /// Bytes dropped from files whose path contains `part`.
    pub fn bytes_in(&self, part: &str) -> u64 {
        self.per_file
            .iter()
            .filter(|(p, _)| p.contains(part))
            .map(|(_, b)| b)
            .sum()
    }
}

/// Parses `dropped bytes=B synced_len=S path=P` into `(P, B)`.
pub fn parse_dropped_line(line: &str) -> Option<(String, u64)> {
    let rest = line.strip_prefix("dropped bytes=")?;
    let (bytes, rest) = rest.split_once(' ')?;
    let (_, path) = rest.split_once(" path=")?;
    Some((path.to_string(), bytes.parse().ok()?))
}

/// Parses `crashed files=N bytes=M`.
pub fn parse_crash_line(line: &str) -> Option<Crash> {
    let rest = line.trim().strip_prefix("crashed ")?;
    let mut it = rest.split_whitespace();
    let files = it.next()?.strip_prefix("files=")?.parse().ok()?;
    let bytes = it.next()?.strip_prefix("bytes=")?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(Crash {
        files,
        bytes,
        per_file: Vec::new(),
    })
}

/// True if `mountpoint` is a mount point now (per `/proc/self/mountinfo`).
pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.to_string_lossy();
    info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| m == want)
}

/// Unmounts `mountpoint` if it is still mounted (lazily, so busy files do not block it).
pub fn force_unmount(mountpoint: &Path) {
    if !is_mounted(mountpoint) {
        return;
    }
    let _ = Command::new(FUSERMOUNT3)
        .args(["-u", "-z", "-q"])
        .arg(mountpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if is_mounted(mountpoint) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(mountpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `faultfs` process and its mount.
pub struct FaultFsProcess {
    child: Option<Child>,
    lines: Receiver<String>,
    /// The backing directory (where the data really is).
    pub backing: PathBuf,
    /// The mount point (where the processes under test write).
    pub mountpoint: PathBuf,
    /// Every power-off so far.
    pub crashes: Vec<Crash>,
}

impl FaultFsProcess {
    /// Starts `bin backing mountpoint` (both directories must exist) and waits (≤ 20 s) for
    /// `ready`.
    pub fn start(bin: &Path, backing: &Path, mountpoint: &Path) -> anyhow::Result<FaultFsProcess> {
        Self::start_with(bin, backing, mountpoint, Duration::ZERO)
    }

    /// Like [`FaultFsProcess::start`], with every fsync taking `fsync_delay` (a slow disk).
    pub fn start_with(
        bin: &Path,
        backing: &Path,
        mountpoint: &Path,
        fsync_delay: Duration,
    ) -> anyhow::Result<FaultFsProcess> {
        let backing = std::fs::canonicalize(backing)?;
        let mountpoint = std::fs::canonicalize(mountpoint)?;
        let mut child = Command::new(bin)
            .arg("--fsync-delay-ms")
            .arg(fsync_delay.as_millis().to_string())
            .arg(&backing)
            .arg(&mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut fs = FaultFsProcess {
            child: Some(child),
            lines,
            backing,
            mountpoint,
            crashes: Vec::new(),
        };
        let line = fs.next_line(Duration::from_secs(20))?;
        anyhow::ensure!(line == "ready", "faultfs said {line:?} instead of ready");
        anyhow::ensure!(is_mounted(&fs.mountpoint), "faultfs ready but not mounted");
        Ok(fs)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn next_line(&mut self, within: Duration) -> anyhow::Result<String> {
        match self.lines.recv_timeout(within) {
            Ok(l) => Ok(l),
            Err(_) => {
                let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                anyhow::bail!("no line from faultfs within {within:?} (exit status: {status:?})")
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Simulated power loss: SIGUSR1, then waits (≤ 60 s) for the `crashed` line. Every
    /// process writing on the mount must have been SIGKILLed before.
    pub fn power_off(&mut self) -> anyhow::Result<Crash> {
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut per_file = Vec::new();
        // One `dropped` line per file (bounded by the files on the mount), then `crashed`.
        for _ in 0..10_000_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            if let Some(d) = parse_dropped_line(&line) {
                per_file.push(d);
                continue;
            }
            let mut crash =
                parse_crash_line(&line).ok_or_else(|| anyhow::anyhow!("unexpected faultfs line {line:?}"))?;
            crash.per_file = per_file;
            anyhow::ensure!(
                crash.per_file.len() as u64 == crash.files
                    && crash.per_file.iter().map(|(_, b)| b).sum::<u64>() == crash.bytes,
                "dropped lines do not add up to {line:?}"
            );
            self.crashes.push(crash.clone());
            return Ok(crash);
        }
        anyhow::bail!("no crashed line from faultfs")
    }

    /// SIGTERM, waits (≤ 15 s) for the exit (SIGKILL after that), then unmounts if the mount is
    /// still there. Returns the exit status if the process ended on SIGTERM.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut status = None;
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(s)) = c.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if status.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The auto-unmount watchdog unmounts asynchronously; give it a moment (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.mountpoint) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        force_unmount(&self.mountpoint);
        status
    }
}

impl Drop for FaultFsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_lines_parse_strictly() {
        let c = parse_crash_line("crashed files=2 bytes=90\n").unwrap();
        assert_eq!((c.files, c.bytes), (2, 90));
        assert_eq!(
            parse_dropped_line("dropped bytes=12 synced_len=0 path=n1/fjall/journals/0"),
            Some(("n1/fjall/journals/0".to_string(), 12))
        );
        assert_eq!(parse_crash_line("crashed files=2"), None);
        assert_eq!(parse_crash_line("crashed files=x bytes=1"), None);
        assert_eq!(parse_crash_line("ready"), None);
    }
}
