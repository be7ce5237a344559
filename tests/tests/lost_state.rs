//! A replica whose journal lost its written tail (issue 13, finding 12): the node says which
//! partitions lost durable Raft state, holds their votes and leadership until its peers have
//! replicated the lost entries back, and nothing acknowledged is lost anywhere.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringchat_tests::jepsen::{check, stop_and_check_replicas, summary, Workload};
use ringchat_tests::*;

/// Cuts `bytes` off the written end of the newest fjall journal under `fjall_dir` (journals
/// are preallocated: the written end is after the last non-zero byte, not the file's end).
/// Returns the file and its written length before and after.
fn cut_written_tail(fjall_dir: &Path, bytes: u64) -> (PathBuf, u64, u64) {
    let mut journals: Vec<(u64, PathBuf)> = std::fs::read_dir(fjall_dir)
        .expect("fjall dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".jnl")?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect();
    journals.sort();
    for (_, path) in journals.into_iter().rev() {
        let data = std::fs::read(&path).expect("read journal");
        let Some(last) = data.iter().rposition(|b| *b != 0) else {
            continue;
        };
        let written = last as u64 + 1;
        let keep = written.saturating_sub(bytes);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open journal");
        file.set_len(keep).expect("truncate journal");
        file.sync_all().expect("fsync journal");
        return (path, written, keep);
    }
    panic!("no written journal under {}", fjall_dir.display());
}

/// Waits (≤ `within`) until the node's log holds a line containing `needle`; the lines found.
async fn log_lines(node: &NodeProcess, needle: &str, within: Duration) -> Vec<String> {
    let path = node.data_dir.with_extension("log");
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<String> = text.lines().filter(|l| l.contains(needle)).map(String::from).collect();
        if !found.is_empty() {
            return found;
        }
        if Instant::now() > deadline {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "no line with {needle:?} in {} within {within:?}; its end:\n{}",
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_journal_lost_its_tail_is_held_until_its_peers_refill_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3, &[]).await;
    let layout = cluster_status(&nodes[0]).expect("status");
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let workload = Workload::start(&bases, 6).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while workload.acked_so_far() < 300 {
        assert!(Instant::now() < deadline, "the writers did not get 300 acks in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Node 3 stops cleanly while the writers go on (its marks are written last), then loses
    // the written tail of its journal, as a disk that lied about an fsync would leave it.
    nodes[2].terminate();
    let (journal, written, kept) = cut_written_tail(&nodes[2].data_dir.join("fjall"), 4096);
    println!("cut {} from {written} to {kept} bytes", journal.display());
    nodes[2].restart().await;

    let lost = log_lines(&nodes[2], "partition lost Raft state", Duration::from_secs(10)).await;
    println!("{}", lost.join("\n"));
    log_lines(&nodes[2], "will not vote or lead", Duration::from_secs(10)).await;
    // The writers keep the partitions busy: their leaders replicate the lost entries again.
    log_lines(&nodes[2], "caught up from its peers", Duration::from_secs(60)).await;
    let (users, channels, history) = workload.finish().await;
    let verdict = check(&bases, &users, &channels, &history).await;
    println!("{}", summary(&history, &verdict));
    assert_eq!(
        (verdict.lost, verdict.duplicates, verdict.gaps, verdict.order_mismatches),
        (0, 0, 0, 0)
    );
    let [n1, n2, n3] = &mut nodes[..] else { unreachable!() };
    stop_and_check_replicas(vec![(1, n1), (2, n2), (3, n3)], &layout, &channels, &history).await;
}
