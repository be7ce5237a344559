//! Partition snapshots as files: every state-machine key of the partition, streamed from a
//! consistent fjall read snapshot, so building or installing one never holds a partition's
//! whole history in memory.
//!
//! File format v1: magic `RCSNAP1\n`, then records `[u32 BE key len][key][u32 BE value len]
//! [value]` with the 2-byte partition prefix stripped from keys, then an end marker
//! `u32::MAX`. A missing end marker means a torn file and is refused.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fjall::Readable;
use ringchat_storage::keys::partition_prefix;
use ringchat_storage::Store;

const MAGIC: &[u8; 8] = b"RCSNAP1\n";
const END: u32 = u32::MAX;

/// Snapshot data handed between openraft and storage: the path of a complete snapshot file.
#[derive(Debug, Clone)]
pub struct SnapshotFile(pub PathBuf);

/// Writes partition `p` as seen by `view` to `path` (via a temp file, fsync'd, renamed).
pub fn write_snapshot(store: &Store, view: &fjall::Snapshot, p: u16, path: &Path) -> io::Result<u64> {
    let tmp = path.with_extension("tmp");
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(MAGIC)?;
    let mut count = 0u64;
    for item in view.prefix(&store.sm, partition_prefix(p)) {
        let (k, v) = item.into_inner().map_err(io::Error::other)?;
        let k = &k[2..];
        out.write_all(&(k.len() as u32).to_be_bytes())?;
        out.write_all(k)?;
        out.write_all(&(v.len() as u32).to_be_bytes())?;
        out.write_all(&v)?;
        count += 1;
    }
    out.write_all(&END.to_be_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(count)
}

/// Reads a snapshot file, calling `each(key_without_prefix, value)` per record.
pub fn read_snapshot(path: &Path, each: impl FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<u64> {
    read_snapshot_from(BufReader::new(File::open(path)?), each)
}

/// Reads snapshot bytes from `input` (a file a peer sent: untrusted), calling `each` per record.
pub fn read_snapshot_from(
    mut input: impl Read,
    mut each: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a ringchat snapshot"));
    }
    let mut count = 0u64;
    let mut key = Vec::new();
    let mut value = Vec::new();
    loop {
        let klen = read_u32(&mut input)?;
        if klen == END {
            return Ok(count);
        }
        read_exact_vec(&mut input, &mut key, klen)?;
        let vlen = read_u32(&mut input)?;
        read_exact_vec(&mut input, &mut value, vlen)?;
        each(&key, &value)?;
        count += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(&[u8], &[u8])], end: bool) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
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
        let count = read_snapshot_from(bytes.as_slice(), |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            seen,
            vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), Vec::new())]
        );
        let torn = file(&[(b"k1", b"v1")], false);
        assert!(read_snapshot_from(torn.as_slice(), |_, _| Ok(())).is_err());
    }

    #[test]
    fn a_record_that_claims_more_than_the_file_holds_is_refused() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"key");
        bytes.extend_from_slice(&((64u32 << 20) - 1).to_be_bytes());
        bytes.extend_from_slice(b"short");
        let err = read_snapshot_from(bytes.as_slice(), |_, _| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
