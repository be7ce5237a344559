//! A `faultfs` mount for power-loss tests: a FUSE passthrough that keeps only fsync'd data when
//! told to "power off" (see `faultfs/src/lib.rs` and `docs/faultfs.md`). kill -9 alone cannot
//! test fsync-before-ack, because the page cache survives a killed process.
//!
//! Use: [`FaultFs::can_run`] first (skips loudly, or panics under
//! `RINGCHAT_REQUIRE_FAULT_TESTS`), [`FaultFs::mount`], put the nodes' data dirs under
//! [`FaultFs::mount`], SIGKILL every node, then [`FaultFs::power_off`]. Drop stops faultfs and
//! unmounts (a watchdog inside faultfs unmounts even if it is killed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringchat_faultfs::harness::{can_run, FaultFsProcess};
pub use ringchat_faultfs::harness::{is_mounted, Crash};

/// The `faultfs` binary built by this workspace (`target/<profile>/faultfs`), or
/// `$RINGCHAT_FAULTFS_BIN`.
pub fn faultfs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RINGCHAT_FAULTFS_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let bin = profile_dir.join("faultfs");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p ringchat-faultfs` (`cargo build --workspace` does)",
        bin.display()
    );
    bin
}

/// A running faultfs: `backing` holds the data, processes under test use `mount`.
pub struct FaultFs {
    proc: FaultFsProcess,
    /// Where the processes under test read and write.
    pub mount: PathBuf,
    /// The backing directory.
    pub backing: PathBuf,
}

impl FaultFs {
    /// True if FUSE can be used here; otherwise prints a loud skip notice and returns false, or
    /// panics when `RINGCHAT_REQUIRE_FAULT_TESTS` is set.
    pub fn can_run(test: &str) -> bool {
        can_run(test)
    }

    /// Mounts faultfs at `dir/mnt` over `dir/backing` (both created) and waits until it is live.
    /// Each fsync takes `fsync_delay` (a slow disk; data is durable when the fsync returns), so
    /// an ack sent before its fsync completed is exposed to the power loss for that long.
    pub fn mount(dir: &Path, fsync_delay: Duration) -> FaultFs {
        let (backing, mnt) = (dir.join("backing"), dir.join("mnt"));
        std::fs::create_dir_all(&backing).expect("backing dir");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let proc = FaultFsProcess::start_with(&faultfs_bin(), &backing, &mnt, fsync_delay).expect("faultfs mounts");
        FaultFs {
            mount: proc.mountpoint.clone(),
            backing: proc.backing.clone(),
            proc,
        }
    }

    /// Simulated power loss of the whole machine: every file on the mount keeps only what was
    /// fsync'd. SIGKILL every process writing on the mount before calling this.
    pub fn power_off(&mut self) -> Crash {
        self.proc.power_off().expect("faultfs power off")
    }
}
