//! Group snapshots as files: every state-machine key of the group (its `Coverage`), streamed
//! from a consistent fjall read snapshot, so building or installing one never holds a
//! partition's whole history in memory.
//!
//! File format v3 (a group that carries other partitions than its own, docs/raft-groups.md):
//! magic `RCSNAP3\n`, then as v2 but with whole keys. A group carrying exactly its own
//! partition (every group before groups carried several) writes v2 as before.
//!
//! File format v2: magic `RCSNAP2\n`, then records `[u32 BE key len][key][u32 BE value len]
//! [value]` with the 2-byte partition prefix stripped from keys, then an end marker
//! `u32::MAX`, then the xxh3-64 (BE) of every byte before it. A missing end marker means a torn
//! file, a wrong checksum a damaged one: both are refused. The values carry their own codec
//! checksums, but the keys only this one, so without it a changed key would be installed as a
//! record under another key. Format v1 (`RCSNAP1\n`, no checksum) is still read: files
//! written by earlier releases stay on disk until the next snapshot replaces them.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::Readable;
use ringchat_storage::keys::partition_prefix;
use ringchat_storage::{KeyBuf, Store};
use xxhash_rust::xxh3::Xxh3;

use super::write_behind::WriteBehind;

const MAGIC: &[u8; 8] = b"RCSNAP2\n";
const MAGIC_V3: &[u8; 8] = b"RCSNAP3\n";
const MAGIC_V1: &[u8; 8] = b"RCSNAP1\n";
const END: u32 = u32::MAX;

/// Bytes at the end of a v2 file that a v1 reader does not know: the checksum.
#[cfg(test)]
pub const V2_TRAILER: u64 = 8;

/// True if `start` (a file's first bytes) opens a v2 file.
#[cfg(test)]
pub fn is_v2(start: &[u8]) -> bool {
    start.starts_with(MAGIC)
}

/// Turns the opening bytes of a v2 file (at least the magic's 8) into v1's: with the trailer
/// left off, the rest is a v1 file with the same records and end marker, as a release before
/// v2 sends it (this release still reads one; it no longer sends one, `rpc::CHANNEL_POSITIONS`).
#[cfg(test)]
pub fn open_as_v1(start: &mut [u8]) {
    start[..MAGIC_V1.len()].copy_from_slice(MAGIC_V1);
}

/// The keys a group's snapshot holds: the group's own records (`[group][META]`) and the data
/// tables of every partition it carries. Data keys stay under their partition's prefix
/// whichever group carries it (`ownership.rs`), so a group's keys are these ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The group.
    pub group: u16,
    /// The partitions it carries.
    pub carried: BTreeSet<u16>,
}

/// One key range of a coverage: keys starting with `prefix`, without the `META` table's when
/// `data_only`.
struct Range {
    prefix: Vec<u8>,
    data_only: bool,
}

impl Range {
    fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix) && !(self.data_only && key.get(2) == Some(&super::tables::META))
    }
}

impl Coverage {
    /// A group carrying its own partition only: that partition's whole prefix, what every
    /// snapshot held before groups carried several partitions (written as v2).
    pub fn own_partition_only(&self) -> bool {
        self.carried.len() == 1 && self.carried.contains(&self.group)
    }

    fn ranges(&self) -> Vec<Range> {
        if self.own_partition_only() {
            return vec![Range {
                prefix: partition_prefix(self.group).to_vec(),
                data_only: false,
            }];
        }
        let mut ranges = vec![Range {
            prefix: KeyBuf::new(self.group, super::tables::META).build(),
            data_only: false,
        }];
        ranges.extend(self.carried.iter().map(|p| Range {
            prefix: partition_prefix(*p).to_vec(),
            data_only: true,
        }));
        ranges
    }

    /// True if `key` (whole) is one of the group's.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.ranges().iter().any(|r| r.contains(key))
    }

    /// Every key of the group in `keyspace` as it is now, range by range.
    pub fn keys<'a>(&self, keyspace: &'a fjall::Keyspace) -> impl Iterator<Item = io::Result<fjall::Slice>> + 'a {
        self.ranges().into_iter().flat_map(move |range| {
            keyspace
                .prefix(range.prefix.clone())
                .map(|item| item.key().map_err(io::Error::other))
                .filter(move |key| key.as_ref().map_or(true, |k| range.contains(k)))
        })
    }
}

/// Snapshot data handed between openraft and storage: the path of a complete snapshot file.
/// A received one is moved into the snapshot dir by the install, not copied.
#[derive(Debug, Clone)]
pub struct SnapshotFile(pub PathBuf);

/// Writes the keys of `coverage` as seen by `view` to `path` (via a temp file, fsync'd, renamed). The
/// temp file's name is this build's own: two builds of one partition at the same index (a
/// scheduled one and the rebuild of a damaged file) must not write into one file. A failed
/// build removes its temp file.
pub fn write_snapshot(store: &Store, view: &fjall::Snapshot, coverage: &Coverage, path: &Path) -> io::Result<u64> {
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!("{TEMP_EXTENSION}{}", BUILDS.fetch_add(1, Ordering::Relaxed)));
    let written = write_to(store, view, coverage, &tmp).and_then(|count| {
        std::fs::rename(&tmp, path)?;
        Ok(count)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let count = written?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(count)
}

/// What a snapshot's temp file name carries after the partition and index (`p3-120.tmp7`).
pub const TEMP_EXTENSION: &str = "tmp";

/// Writes the whole file to `tmp` and fsyncs it; returns the record count.
fn write_to(store: &Store, view: &fjall::Snapshot, coverage: &Coverage, tmp: &Path) -> io::Result<u64> {
    let mut out = Hashing::new(BufWriter::new(WriteBehind::new(File::create(tmp)?)));
    // v2 keys are relative to the one partition; v3 keys are whole.
    let (magic, strip) = if coverage.own_partition_only() {
        (MAGIC, 2)
    } else {
        (MAGIC_V3, 0)
    };
    out.write_all(magic)?;
    let mut count = 0u64;
    for range in coverage.ranges() {
        for item in view.prefix(&store.sm, &range.prefix) {
            let (k, v) = item.into_inner().map_err(io::Error::other)?;
            if !range.contains(&k) {
                continue;
            }
            let k = &k[strip..];
            out.write_all(&(k.len() as u32).to_be_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_be_bytes())?;
            out.write_all(&v)?;
            count += 1;
        }
    }
    out.write_all(&END.to_be_bytes())?;
    let checksum = out.hash.digest();
    let mut out = out.inner;
    out.write_all(&checksum.to_be_bytes())?;
    out.into_inner().map_err(|e| e.into_error())?.finish()?;
    Ok(count)
}

/// Reads a snapshot file of group `group`, calling `each(whole_key, value)` per record (a v1
/// or v2 file's keys are relative to the group's own partition and are made whole here).
///
/// The checksum is known only at the end, so `each` may have seen records of a file that is
/// then refused: a caller that must not act on a damaged file checks it first
/// (`verify_snapshot`).
pub fn read_snapshot(path: &Path, group: u16, each: impl FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<u64> {
    read_snapshot_from(BufReader::new(File::open(path)?), group, each)
}

/// Reads a whole snapshot file and checks it (shape and checksum) without using its records.
pub fn verify_snapshot(path: &Path) -> io::Result<u64> {
    read_snapshot(path, 0, |_, _| Ok(()))
}

/// Reads snapshot bytes of group `group` from `input` (a file a peer sent: untrusted),
/// calling `each` per record with its whole key.
pub fn read_snapshot_from(
    input: impl Read,
    group: u16,
    mut each: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut input = Hashing::new(input);
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    let (checked, whole) = match &magic {
        m if m == MAGIC_V3 => (true, true),
        m if m == MAGIC => (true, false),
        m if m == MAGIC_V1 => (false, false),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "not a ringchat snapshot")),
    };
    let mut count = 0u64;
    let mut key = Vec::new();
    let mut value = Vec::new();
    loop {
        let klen = read_u32(&mut input)?;
        if klen == END {
            break;
        }
        if whole {
            read_exact_vec(&mut input, &mut key, klen)?;
        } else {
            let mut relative = Vec::new();
            read_exact_vec(&mut input, &mut relative, klen)?;
            key.clear();
            key.extend_from_slice(&partition_prefix(group));
            key.extend_from_slice(&relative);
        }
        let vlen = read_u32(&mut input)?;
        read_exact_vec(&mut input, &mut value, vlen)?;
        each(&key, &value)?;
        count += 1;
    }
    if checked {
        let computed = input.hash.digest();
        let mut stored = [0u8; 8];
        input.inner.read_exact(&mut stored)?;
        if u64::from_be_bytes(stored) != computed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot checksum mismatch"));
        }
    }
    Ok(count)
}

/// A reader or writer that hashes every byte passing through it.
struct Hashing<T> {
    inner: T,
    hash: Xxh3,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            hash: Xxh3::new(),
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_exact_vec(r: &mut impl Read, buf: &mut Vec<u8>, len: u32) -> io::Result<()> {
    // Values are bounded by the message size limit; refuse absurd lengths from a bad file.
    if len > 64 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot record too large"));
    }
    // Read what is there instead of allocating the claimed length first: a short file that
    // claims 64 MiB costs what it holds, not 64 MiB.
    buf.clear();
    r.take(u64::from(len)).read_to_end(buf)?;
    if buf.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "snapshot ends inside a record",
        ));
    }
    Ok(())
}

/// Writes a snapshot of partition `p` holding `records` (keys without the partition prefix)
/// to `dir/p<p>.snap`, through a store in `dir/db`; tests of the format and of its transport.
#[cfg(test)]
pub(crate) fn write_test_snapshot(dir: &Path, p: u16, records: &[(Vec<u8>, Vec<u8>)]) -> PathBuf {
    let store = Store::open(&dir.join("db")).expect("open store");
    for (key, value) in records {
        let mut full = partition_prefix(p).to_vec();
        full.extend_from_slice(key);
        store.sm.insert(full, value).expect("insert");
    }
    let path = dir.join(format!("p{p}.snap"));
    let coverage = Coverage {
        group: p,
        carried: BTreeSet::from([p]),
    };
    let written = write_snapshot(&store, &store.db.snapshot(), &coverage, &path).expect("write snapshot");
    assert_eq!(written, records.len() as u64);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 file (no checksum), or torn when `end` is false.
    fn file(records: &[(&[u8], &[u8])], end: bool) -> Vec<u8> {
        let mut out = MAGIC_V1.to_vec();
        for (k, v) in records {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        if end {
            out.extend_from_slice(&END.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_complete_file_yields_its_records_and_a_torn_one_is_refused() {
        let bytes = file(&[(b"k1", b"v1"), (b"k2", b"")], true);
        let mut seen = Vec::new();
        // v1 keys are relative to the group's partition; the reader makes them whole.
        let count = read_snapshot_from(bytes.as_slice(), 0x0102, |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            seen,
            vec![
                (b"\x01\x02k1".to_vec(), b"v1".to_vec()),
                (b"\x01\x02k2".to_vec(), Vec::new())
            ]
        );
        let torn = file(&[(b"k1", b"v1")], false);
        assert!(read_snapshot_from(torn.as_slice(), 0, |_, _| Ok(())).is_err());
    }

    #[test]
    fn a_record_that_claims_more_than_the_file_holds_is_refused() {
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"key");
        bytes.extend_from_slice(&((64u32 << 20) - 1).to_be_bytes());
        bytes.extend_from_slice(b"short");
        let err = read_snapshot_from(bytes.as_slice(), 0, |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_written_file_reads_back_and_any_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..20u32)
            .map(|i| (format!("key-{i:02}").into_bytes(), format!("value {i}").into_bytes()))
            .collect();
        let path = write_test_snapshot(dir.path(), 3, &records);
        let mut seen = Vec::new();
        read_snapshot(&path, 3, |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 20);
        assert_eq!(seen[7], (b"\x00\x03key-07".to_vec(), b"value 7".to_vec()));
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                verify_snapshot(&path).is_err(),
                "byte {at} of {} changed, still accepted",
                good.len()
            );
        }
    }

    #[test]
    fn a_v2_file_sent_as_v1_reads_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..5u32)
            .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
            .collect();
        let path = write_test_snapshot(dir.path(), 1, &records);
        let v2 = std::fs::read(&path).unwrap();
        assert!(is_v2(&v2));
        let mut v1 = v2[..v2.len() - V2_TRAILER as usize].to_vec();
        open_as_v1(&mut v1);
        assert!(!is_v2(&v1) && v1.starts_with(MAGIC_V1));
        let records = |bytes: &[u8]| {
            let mut seen = Vec::new();
            read_snapshot_from(bytes, 1, |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
            seen
        };
        assert_eq!(records(&v1), records(&v2));
        assert_eq!(records(&v1).len(), 5);
    }
}
