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
pub fn read_snapshot(path: &Path, mut each: impl FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<u64> {
    let mut input = BufReader::new(File::open(path)?);
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
    buf.resize(len as usize, 0);
    r.read_exact(buf)
}
