//! Recovering from a storage error without an operator: a full disk (or a failing write)
//! poisons the node's one fjall database and stops the Raft groups that hit it, for good
//! (docs/storage.md). Nothing short of reopening the store brings them back, and every group
//! shares that store, so the node recovers as a whole: `ringchat serve` waits until the data
//! dir takes a write and an fsync again (serving meanwhile: writes answer `unavailable`,
//! `/readyz` 503), then stops the app cleanly and starts it anew on the same data dir, as a
//! restart would. Clients see their connections close and reconnect.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ringchat_cluster::Cluster;
use tokio_util::sync::CancellationToken;

/// How often the groups are checked, and how often a full disk is probed.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Bytes the probe writes: room for the journal a reopened store starts with.
const PROBE_BYTES: usize = 1 << 20;

/// Waits until one of `cluster`'s groups has stopped (returns what stopped them), a read found
/// the database damaged, or `stop` is cancelled (returns `None`).
pub async fn stopped_groups(cluster: &Cluster, stop: &CancellationToken) -> Option<Vec<(u16, String)>> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let stopped = cluster.stopped_groups();
        if !stopped.is_empty() {
            return Some(stopped);
        }
        // A read found damaged data: only a restart sets the database aside (`Store::open`).
        if cluster.damage_noted() {
            return Some(vec![(u16::MAX, "a read found the database damaged".into())]);
        }
    }
}

/// Waits until a write and an fsync of `PROBE_BYTES` in `dir` succeed (true), or `stop` is
/// cancelled (false).
pub async fn room_in(dir: &Path, stop: &CancellationToken) -> bool {
    loop {
        let probe = dir.join(".room-probe");
        let written = tokio::task::spawn_blocking(move || {
            let result = std::fs::File::create(&probe).and_then(|mut f| {
                f.write_all(&vec![0u8; PROBE_BYTES])?;
                f.sync_all()
            });
            let _ = std::fs::remove_file(&probe);
            result
        })
        .await;
        match written {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::debug!(error = %e, "data dir still refuses writes"),
            Err(e) => tracing::debug!(error = %e, "disk probe failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}
