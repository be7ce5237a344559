//! # faultfs: a test-only filesystem that loses unsynced writes on a simulated power loss
//!
//! ringchat acknowledges a message only after the fsync that covers it. A `kill -9` test cannot
//! prove that: the killed process's writes are already in the kernel's page cache, which
//! survives the process, so a node that acks *before* its fsync (or never fsyncs) still passes.
//! Only losing the page cache — a power failure — shows the difference. This crate does what
//! Jepsen's LazyFS does, in pure Rust over FUSE: a passthrough filesystem over a backing
//! directory that remembers, per file, what was written since the file's last
//! `fsync`/`fdatasync`, and on `SIGUSR1` ("power off") throws exactly that away.
//!
//! ## The modelled filesystem
//!
//! * File **data** written since the file's last `fsync`/`fdatasync` (through any handle of the
//!   inode) is unsynced; a power loss drops it: appended bytes are cut off, overwritten bytes
//!   that were synced get their old value back, truncates below the synced length are undone.
//! * **Metadata** operations (create, mkdir, rename, unlink, rmdir, symlink, chmod, utimens) are
//!   durable at once, in order — like a filesystem with ordered metadata journaling. That is a
//!   simplification: a real filesystem may lose a recent create or rename unless the directory
//!   is fsync'd, and may tear a write at page or sector granularity; this one does neither.
//!   So it finds missing data fsyncs, not missing directory fsyncs or torn-write bugs.
//! * The backing files are never fsync'd themselves (it is scratch space of a test).
//!
//! ## Use
//!
//! `faultfs <backing-dir> <mountpoint>` prints `ready` once mounted. `SIGUSR1`: the caller has
//! SIGKILLed every process writing on the mount; faultfs restores each file to its synced
//! state, prints `crashed files=N bytes=M` and keeps serving (restart the processes on the same
//! mount). `SIGTERM`/`SIGINT`: unmount and exit 0. A watchdog process forked at start unmounts
//! the mount once faultfs is gone, however it ended (SIGKILL included).
//! [`harness::FaultFsProcess`] drives the binary from tests.

pub mod fs;
pub mod harness;
pub mod undo;

pub use fs::{CrashReport, FaultFs, Inner};
