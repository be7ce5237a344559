//! The passthrough filesystem: every operation goes to the same path under the backing
//! directory; writes, truncates and `fallocate` first record what a power loss would undo
//! (see [`crate::undo`]).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::undo::{read_range, UndoLog};

/// How long the kernel may cache attributes and names. Only this filesystem changes the
/// backing directory, and a power loss invalidates what it changed, so a short TTL is safe.
const TTL: Duration = Duration::from_secs(1);

/// What one simulated power loss did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Files that lost unsynced data.
    pub files: u64,
    /// Unsynced bytes dropped (appended bytes cut off plus overwritten synced bytes restored).
    pub bytes: u64,
    /// Inodes whose data changed (the kernel's cache of them must be invalidated).
    pub inodes: Vec<u64>,
    /// Per file that lost data: path relative to the backing dir, bytes dropped, synced length.
    pub dropped: Vec<(PathBuf, u64, u64)>,
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

struct State {
    /// Inode → backing path (absolute). Names removed by unlink/rmdir are dropped.
    paths: HashMap<u64, PathBuf>,
    /// Backing path → inode.
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open file handles: fh → (inode, backing file).
    files: HashMap<u64, (u64, Arc<File>)>,
    /// Open directory handles: fh → snapshot of the entries.
    dirs: HashMap<u64, Arc<Vec<DirEntry>>>,
    next_fh: u64,
    undo: UndoLog,
}

impl State {
    fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(ino) = self.inos.get(path) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(path.to_path_buf(), ino);
        self.paths.insert(ino, path.to_path_buf());
        ino
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn file(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        self.files.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn new_fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    /// Drops `path` and everything below it from the inode table; their undo records go too.
    fn forget_tree(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self.inos.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for p in gone {
            if let Some(ino) = self.inos.remove(&p) {
                self.paths.remove(&ino);
                self.undo.forget(ino);
            }
        }
    }

    /// Moves `from` and everything below it to `to` in the inode table.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, _) in &moved {
            self.inos.remove(p);
        }
        for (p, ino) in moved {
            let rest = p.strip_prefix(from).expect("filtered by prefix");
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.inos.insert(np.clone(), ino);
            self.paths.insert(ino, np);
        }
    }
}

/// The filesystem state, shared between the FUSE worker threads and the signal thread.
pub struct Inner {
    root: PathBuf,
    state: Mutex<State>,
    /// How long an fsync takes (a slow disk); the data counts as synced only when it returns.
    fsync_delay: Duration,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one handler must not wedge every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a power loss: every file loses the data written since its last sync.
    /// The caller must have stopped (SIGKILLed) every process writing on the mount first.
    pub fn power_off(&self) -> io::Result<CrashReport> {
        let mut st = self.lock();
        let mut report = CrashReport::default();
        for (ino, undo) in st.undo.take_all() {
            let Some(path) = st.paths.get(&ino) else { continue };
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let dropped = undo.apply(&file)?;
            report.inodes.push(ino);
            if dropped > 0 {
                report.files += 1;
                report.bytes += dropped;
                let rel = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
                report.dropped.push((rel, dropped, undo.durable_len().unwrap_or(0)));
            }
        }
        Ok(report)
    }

    /// Number of files with unsynced data right now.
    pub fn unsynced_files(&self) -> usize {
        self.lock().undo.len()
    }
}

/// The FUSE filesystem over a backing directory.
pub struct FaultFs {
    inner: Arc<Inner>,
}

impl FaultFs {
    /// A filesystem over `backing` (which must be an existing directory) whose fsyncs take
    /// `fsync_delay` each. The data of an inode becomes durable when its fsync *returns*, so a
    /// program that acknowledges before its fsync has returned is exposed for that long.
    pub fn new(backing: &Path, fsync_delay: Duration) -> io::Result<FaultFs> {
        let root = fs::canonicalize(backing)?;
        if !fs::metadata(&root)?.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", root.display())));
        }
        let mut paths = HashMap::new();
        let mut inos = HashMap::new();
        paths.insert(INodeNo::ROOT.0, root.clone());
        inos.insert(root.clone(), INodeNo::ROOT.0);
        Ok(FaultFs {
            inner: Arc::new(Inner {
                root,
                state: Mutex::new(State {
                    paths,
                    inos,
                    next_ino: INodeNo::ROOT.0 + 1,
                    files: HashMap::new(),
                    dirs: HashMap::new(),
                    next_fh: 0,
                    undo: UndoLog::default(),
                }),
                fsync_delay,
            }),
        })
    }

    /// A handle for [`Inner::power_off`] that stays valid after the filesystem is mounted.
    pub fn handle(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn errno_now() -> Errno {
    Errno::from(io::Error::last_os_error())
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        }
    }
}

/// True if thread `tid` (the caller of a request) has a SIGKILL pending, i.e. it is being
/// killed while it waits for this filesystem, or is gone.
fn caller_killed(tid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    let kill_bit = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let mask = l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & kill_bit != 0)
    })
}

/// Runs `f`; its error becomes the reply's errno.
macro_rules! reply_with {
    ($reply:ident, $body:expr) => {{
        #[allow(clippy::redundant_closure_call)]
        let r: Result<_, Errno> = (|| $body)();
        match r {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    }};
}

impl FaultFs {
    fn entry(&self, path: &Path) -> Result<FileAttr, Errno> {
        let m = fs::symlink_metadata(path)?;
        let ino = self.inner.lock().ino_for(path);
        Ok(attr(ino, &m))
    }

    fn attr_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let st = self.inner.lock();
        if let Some(fh) = fh {
            if let Ok((_, file)) = st.file(fh) {
                return Ok(attr(ino.0, &file.metadata()?));
            }
        }
        let path = st.path(ino)?;
        drop(st);
        Ok(attr(ino.0, &fs::symlink_metadata(path)?))
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let a = reply_with!(reply, {
            let path = self.inner.lock().child(parent, name)?;
            self.entry(&path)
        });
        reply.entry(&TTL, &a, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let a = reply_with!(reply, self.attr_of(ino, fh));
        reply.attr(&TTL, &a);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.path(ino)?;
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
            if let Some(size) = size {
                let file = match fh.and_then(|fh| st.file(fh).ok()) {
                    Some((_, f)) => f,
                    None => Arc::new(OpenOptions::new().read(true).write(true).open(&path)?),
                };
                st.undo.before_truncate(ino.0, &file, size)?;
                file.set_len(size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let times = [timespec(atime), timespec(mtime)];
                let c = cpath(&path)?;
                // SAFETY: `c` is a valid NUL-terminated path and `times` has two entries.
                let rc =
                    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
                if rc != 0 {
                    return Err(errno_now());
                }
            }
            drop(st);
            self.attr_of(ino, fh)
        });
        reply.attr(&TTL, &a);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = reply_with!(reply, {
            let path = self.inner.lock().path(ino)?;
            Ok(fs::read_link(path)?)
        });
        reply.data(target.as_os_str().as_bytes());
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let a = reply_with!(reply, {
            let path = self.inner.lock().child(parent, name)?;
            fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(&path)?;
            self.entry(&path)
        });
        reply.entry(&TTL, &a, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.child(parent, name)?;
            fs::remove_file(&path)?;
            st.forget_tree(&path);
            Ok(())
        });
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.child(parent, name)?;
            fs::remove_dir(&path)?;
            st.forget_tree(&path);
            Ok(())
        });
        reply.ok();
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let a = reply_with!(reply, {
            let path = self.inner.lock().child(parent, link_name)?;
            std::os::unix::fs::symlink(target, &path)?;
            self.entry(&path)
        });
        reply.entry(&TTL, &a, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_with!(reply, {
            let mut st = self.inner.lock();
            let from = st.child(parent, name)?;
            let to = st.child(newparent, newname)?;
            if flags.is_empty() {
                fs::rename(&from, &to)?;
            } else {
                let (f, t) = (cpath(&from)?, cpath(&to)?);
                // SAFETY: both are valid NUL-terminated paths.
                let rc =
                    unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags.bits()) };
                if rc != 0 {
                    return Err(errno_now());
                }
            }
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                let tmp = self.inner.root.join(".faultfs-exchange-placeholder");
                st.move_tree(&from, &tmp);
                st.move_tree(&to, &from);
                st.move_tree(&tmp, &to);
            } else {
                if from != to {
                    st.forget_tree(&to);
                }
                st.move_tree(&from, &to);
            }
            Ok(())
        });
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.path(ino)?;
            let mut oo = OpenOptions::new();
            oo.read(true);
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                oo.write(true);
            }
            let file = oo.open(&path)?;
            let fh = st.new_fh();
            st.files.insert(fh, (ino.0, Arc::new(file)));
            Ok(fh)
        });
        // No FOPEN_KEEP_CACHE: the kernel drops its cached pages of the file on every open, so
        // a process started after a power loss reads what the backing file holds now.
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let buf = reply_with!(reply, {
            let (_, file) = self.inner.lock().file(fh)?;
            Ok(read_range(&file, offset, u64::from(size))?)
        });
        reply.data(&buf);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply_with!(reply, {
            // Held across the write: the saved old bytes and the write are one step.
            let mut st = self.inner.lock();
            let (ino, file) = st.file(fh)?;
            st.undo.before_write(ino, &file, offset, data.len() as u64)?;
            file.write_all_at(data, offset)?;
            Ok(())
        });
        reply.written(data.len() as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // The backing file is not fsync'd: durability is modelled, not real (the backing
        // directory is scratch space of a test). The modelled disk takes `fsync_delay`; when it
        // returns, everything of this inode written before the fsync started is durable —
        // unless the caller was SIGKILLed meanwhile (it never saw the fsync return, so a power
        // loss right after the kill may legally lose the data: the worst legal outcome), or
        // the power went off meanwhile.
        let token = self.inner.lock().undo.sync_start(ino.0);
        if !self.inner.fsync_delay.is_zero() {
            std::thread::sleep(self.inner.fsync_delay);
        }
        if caller_killed(req.pid()) {
            self.inner.lock().undo.sync_abandon(token);
            reply.error(Errno::EINTR);
        } else if self.inner.lock().undo.sync_end(token) {
            reply.ok();
        } else {
            reply.error(Errno::EIO);
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.path(ino)?;
            let parent = match path.parent() {
                Some(p) if path != self.inner.root => st.ino_for(p),
                _ => ino.0,
            };
            let mut entries = vec![
                DirEntry {
                    ino: ino.0,
                    kind: FileType::Directory,
                    name: ".".into(),
                },
                DirEntry {
                    ino: parent,
                    kind: FileType::Directory,
                    name: "..".into(),
                },
            ];
            for e in fs::read_dir(&path)? {
                let e = e?;
                let kind = e
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                entries.push(DirEntry {
                    ino: st.ino_for(&e.path()),
                    kind,
                    name: e.file_name(),
                });
            }
            let fh = st.new_fh();
            st.dirs.insert(fh, Arc::new(entries));
            Ok(fh)
        });
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = reply_with!(reply, self.inner.lock().dirs.get(&fh.0).cloned().ok_or(Errno::EBADF));
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Metadata is durable at once in the modelled filesystem.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = reply_with!(reply, {
            let c = cpath(&self.inner.root)?;
            // SAFETY: statvfs is plain data; `c` is a valid path.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
                return Err(errno_now());
            }
            Ok(s)
        });
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply_with!(reply, {
            let path = self.inner.lock().path(ino)?;
            fs::symlink_metadata(path)?;
            Ok(())
        });
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (a, fh) = reply_with!(reply, {
            let mut st = self.inner.lock();
            let path = st.child(parent, name)?;
            let mut oo = OpenOptions::new();
            oo.read(true).write(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                oo.create_new(true);
            } else {
                oo.create(true);
            }
            let file = oo.open(&path)?;
            let ino = st.ino_for(&path);
            if flags & libc::O_TRUNC != 0 {
                st.undo.before_truncate(ino, &file, 0)?;
                file.set_len(0)?;
            }
            let a = attr(ino, &file.metadata()?);
            let fh = st.new_fh();
            st.files.insert(fh, (ino, Arc::new(file)));
            Ok((a, fh))
        });
        reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty());
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_with!(reply, {
            if mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE) != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let mut st = self.inner.lock();
            let (ino, file) = st.file(fh)?;
            st.undo.before_change(ino, &file, offset, length)?;
            // SAFETY: the fd is open for as long as `file` lives.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, length as i64) };
            if rc != 0 {
                return Err(errno_now());
            }
            Ok(())
        });
        reply.ok();
    }
}
