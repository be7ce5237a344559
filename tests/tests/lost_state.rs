//! A replica that lost durable state (issue 13, finding 12): a journal that lost its written
//! tail, and a database fjall finds damaged. The node says which partitions lost Raft state,
//! holds their votes and leadership until its peers have replicated it back (a damaged
//! database is set aside and refilled whole), and nothing acknowledged is lost anywhere.

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

/// Flips one byte of a message text (the workload's `w<writer>-<n>`) in the middle half of the
/// written part of the newest fjall journal under `fjall_dir`, as a disk that returns wrong
/// data would: fjall's batch checksum catches it. A text byte, not any byte: a changed batch
/// header can read as a torn tail (fjall then drops the rest of the journal silently, which
/// is the truncated-journal case, not this one), and only the last batch may be torn.
fn flip_a_journal_byte(fjall_dir: &Path) -> PathBuf {
    let (path, written, _) = cut_written_tail(fjall_dir, 0);
    let mut data = std::fs::read(&path).expect("read journal");
    let (from, to) = ((written / 4) as usize, (written * 3 / 4) as usize);
    let is_text = |w: &[u8]| w[0] == b'w' && w[1].is_ascii_digit() && w[2] == b'-';
    let at = data[from..to]
        .windows(3)
        .position(is_text)
        .map(|i| from + i)
        .expect("a message text in the middle of the journal");
    data[at] ^= 0x01;
    std::fs::write(&path, &data).expect("write journal");
    path
}

/// Waits (≤ `within`) until the node's log holds a line containing `needle`; the lines found.
async fn log_lines(node: &NodeProcess, needle: &str, within: Duration) -> Vec<String> {
    log_lines_at_least(node, needle, 1, within).await
}

/// Waits (≤ `within`) until the node's log holds `count` lines containing `needle`.
async fn log_lines_at_least(node: &NodeProcess, needle: &str, count: usize, within: Duration) -> Vec<String> {
    let path = node.data_dir.with_extension("log");
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<String> = text.lines().filter(|l| l.contains(needle)).map(String::from).collect();
        if found.len() >= count {
            return found;
        }
        if Instant::now() > deadline {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "{} of {count} lines with {needle:?} in {} within {within:?}; its end:\n{}",
                found.len(),
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 3-node cluster under six writers that have 300 acks already.
struct Busy {
    nodes: Vec<NodeProcess>,
    layout: serde_json::Value,
    /// The cluster's partition count.
    partitions: usize,
    bases: Vec<String>,
    workload: Workload,
}

async fn busy_cluster(dir: &Path) -> Busy {
    let nodes = start_cluster(dir, 3, &[]).await;
    let layout = cluster_status(&nodes[0]).expect("status");
    let partitions = layout["partitions"].as_array().map_or(0, Vec::len);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let workload = Workload::start(&bases, 6).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while workload.acked_so_far() < 300 {
        assert!(Instant::now() < deadline, "the writers did not get 300 acks in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Busy {
        nodes,
        layout,
        partitions,
        bases,
        workload,
    }
}

/// Stops the writers, reads every acked message back through every node, then checks every
/// replica's own store: nothing lost, duplicated, out of order or different anywhere.
async fn finish_and_check(
    mut nodes: Vec<NodeProcess>,
    layout: &serde_json::Value,
    bases: &[String],
    workload: Workload,
) {
    let (users, channels, history) = workload.finish().await;
    let verdict = check(bases, &users, &channels, &history).await;
    println!("{}", summary(&history, &verdict));
    assert_eq!(
        (verdict.lost, verdict.duplicates, verdict.gaps, verdict.order_mismatches),
        (0, 0, 0, 0)
    );
    let [n1, n2, n3] = &mut nodes[..] else { unreachable!() };
    stop_and_check_replicas(vec![(1, n1), (2, n2), (3, n3)], layout, &channels, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_journal_lost_its_tail_is_held_until_its_peers_refill_it() {
    let dir = tempfile::tempdir().unwrap();
    let Busy {
        mut nodes,
        layout,
        bases,
        workload,
        ..
    } = busy_cluster(dir.path()).await;

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
    finish_and_check(nodes, &layout, &bases, workload).await;
}

/// Waits until every group node 3 replicated (one per replica set it is in, as `layout`
/// places the partitions), and the meta group, came back from its peers (a database set aside
/// is refilled whole, busy groups or not).
async fn refilled_whole(node: &NodeProcess, layout: &serde_json::Value) {
    let groups = groups_expected(layout, 3)[2] as usize;
    log_lines_at_least(node, "caught up from its peers", groups + 1, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_database_is_damaged_is_set_aside_and_refilled_by_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let Busy {
        mut nodes,
        layout,
        partitions: _,
        bases,
        workload,
    } = busy_cluster(dir.path()).await;

    nodes[2].terminate();
    let journal = flip_a_journal_byte(&nodes[2].data_dir.join("fjall"));
    println!("flipped a byte in {}", journal.display());
    // It starts (it used to refuse to, for good), empty, and says where the damaged copy went.
    nodes[2].restart().await;
    let damaged = log_lines(&nodes[2], "the database is damaged", Duration::from_secs(10)).await;
    println!("{}", damaged.join("\n"));
    let aside: Vec<_> = std::fs::read_dir(&nodes[2].data_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fjall.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged database is kept aside, not deleted");
    refilled_whole(&nodes[2], &layout).await;
    finish_and_check(nodes, &layout, &bases, workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_found_while_running_makes_the_node_rebuild_from_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let Busy {
        mut nodes,
        layout,
        partitions,
        bases,
        workload,
    } = busy_cluster(dir.path()).await;

    // Bit rot in node 3's copy of every writer's channel record: fjall opens the database
    // (its blocks are intact), the record's own checksum no longer matches.
    nodes[2].terminate();
    {
        let store = ringchat_storage::Store::open(&nodes[2].data_dir).expect("open the stopped node's store");
        for cid in &workload.channels {
            let p = ringchat_cluster::placement::partition_of(cid, partitions as u16);
            let key = ringchat_cluster::partition::tables::channel(p, cid);
            let mut value = store.sm.get(&key).expect("read").expect("the channel record").to_vec();
            let at = value.len() / 2;
            value[at] ^= 0x55;
            store.sm.insert(&key, value).expect("write");
        }
        store.sync().expect("fsync");
    }
    nodes[2].restart().await;
    // The next message of such a channel makes node 3 read its record: the read fails (no
    // damaged bytes are served or applied), the node restarts itself, sets the database aside
    // and is refilled by its peers.
    log_lines(&nodes[2], "a read found the database damaged", Duration::from_secs(30)).await;
    log_lines(
        &nodes[2],
        "the database is damaged: it is set aside",
        Duration::from_secs(60),
    )
    .await;
    refilled_whole(&nodes[2], &layout).await;
    finish_and_check(nodes, &layout, &bases, workload).await;
}
