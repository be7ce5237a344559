//! Power loss of a whole 3-node cluster: the nodes' data dirs live on faultfs, a FUSE layer that
//! drops every write not yet fsync'd when the "power" goes off. kill -9 alone cannot test
//! fsync-before-ack (the page cache survives a killed process); this can. Writers send
//! continuously through all three nodes with retries by client_msg_id; then every node is
//! SIGKILLed at once, the unsynced data is dropped, and the cluster restarts. Jepsen-style
//! verdict: every acked message present exactly once at its acked seq, every channel gap-free,
//! and the same order on every node.

use std::time::{Duration, Instant};

use ringchat_tests::faultfs::FaultFs;
use ringchat_tests::jepsen::{check, read_channel, stop_and_check_replicas, summary, Verdict, Workload};
use ringchat_tests::*;

/// Power-off rounds.
const ROUNDS: usize = 2;
/// Writers (one DM channel each).
const WRITERS: usize = 6;
/// How long each fsync takes on the faultfs disk.
const FSYNC_DELAY: Duration = Duration::from_millis(20);

/// Waits (≤ 90 s) until every channel reads on every node; panics with the last error.
async fn wait_readable(nodes: &[NodeProcess], readers: &[TestUser], channels: &[String]) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    for node in nodes {
        for (user, cid) in readers.iter().zip(channels) {
            let http = node.http().with_token(&user.token);
            loop {
                match tokio::time::timeout(Duration::from_secs(5), http.history(cid, None, None, Some(1))).await {
                    Ok(Ok(_)) => break,
                    other => assert!(
                        Instant::now() < deadline,
                        "channel {cid} not readable on {} within 90 s after restart: {other:?}",
                        node.base
                    ),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_power_loss_of_the_whole_cluster() {
    if !FaultFs::can_run("acked_messages_survive_power_loss_of_the_whole_cluster") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A slow disk (20 ms per fsync): a node that acked before its fsync returned would lose
    // acked messages whenever the power goes off inside that window.
    let mut ffs = FaultFs::mount(&dir.path().join("fs"), FSYNC_DELAY);
    // Data dirs on the mount; the node logs (`<data dir>.log`) beside the symlinks, off the
    // mount, so a power loss does not eat them.
    let base = dir.path().join("nodes");
    std::fs::create_dir_all(&base).unwrap();
    for id in 1..=3 {
        let on_mount = ffs.mount.join(format!("n{id}"));
        std::fs::create_dir_all(&on_mount).unwrap();
        std::os::unix::fs::symlink(&on_mount, base.join(format!("n{id}"))).unwrap();
    }
    let mut nodes = start_cluster(&base, 3, &[]).await;

    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let workload = Workload::start(&bases, WRITERS).await;

    let mut crashes = Vec::new();
    for round in 1..=ROUNDS {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let acked_before = workload.acked_so_far();
        // The whole cluster loses power: every node is SIGKILLed at the same instant (one
        // thread each; an fsync in flight then never returns and makes nothing durable), then
        // the disks lose what was not fsync'd.
        std::thread::scope(|s| {
            for n in nodes.iter_mut() {
                s.spawn(move || n.kill9());
            }
        });
        let crash = ffs.power_off();
        let fjall = crash.bytes_in("/fjall/");
        println!(
            "round {round}: acked so far {acked_before}; power off dropped {} unsynced bytes in {} files \
             ({fjall} bytes in fjall files)",
            crash.bytes, crash.files
        );
        // The foyer disk cache's files are never fsync'd (a cache): summed, not listed.
        let cache = crash.bytes_in("/cache/");
        for (path, bytes) in crash.per_file.iter().filter(|(p, _)| !p.contains("/cache/")) {
            println!("  dropped {bytes:>10} bytes of {path}");
        }
        println!("  dropped {cache:>10} bytes of the foyer disk cache files");
        crashes.push(crash);
        let [a, b, c] = &mut nodes[..] else { unreachable!() };
        tokio::join!(a.restart(), b.restart(), c.restart());
        let took = wait_readable(&nodes, &workload.users, &workload.channels).await;
        println!("round {round}: every channel readable on every node {took:?} after the restart");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (users, channels, history) = workload.finish().await;

    // Every channel read back from every node: acked present exactly once at its seq,
    // gap-free, one order.
    let verdict = check(&bases, &users, &channels, &history).await;
    let mut lost_ids = Vec::new();
    if verdict.lost > 0 {
        // Which ones, as node 1 returns them.
        for (w, cid) in channels.iter().enumerate() {
            let msgs = read_channel(&bases[0], &users[w], cid).await;
            let by_cmid: std::collections::BTreeMap<String, u64> = msgs
                .iter()
                .map(|m| (m.client_msg_id.clone().unwrap_or_default(), m.seq))
                .collect();
            for ((c, cmid), seq) in &history.acked {
                if c == cid && by_cmid.get(cmid) != Some(seq) {
                    lost_ids.push(format!("{cid}/{cmid}@{seq}"));
                }
            }
        }
    }
    let dropped: u64 = crashes.iter().map(|c| c.bytes).sum();
    let dropped_fjall: u64 = crashes.iter().map(|c| c.bytes_in("/fjall/")).sum();
    println!(
        "power-loss checker: rounds {ROUNDS}, {}, unsynced bytes dropped {dropped} ({dropped_fjall} in fjall files)",
        summary(&history, &verdict)
    );
    if !lost_ids.is_empty() {
        println!(
            "lost on node 1: {} acked messages (channel/client_msg_id@acked seq), first 20: {:?}",
            lost_ids.len(),
            lost_ids.iter().take(20).collect::<Vec<_>>()
        );
    }
    assert!(verdict.acked > 50, "too few acked to mean anything: {}", verdict.acked);
    assert!(
        dropped_fjall > 0,
        "the power offs dropped no unsynced database data, so they tested nothing"
    );
    assert_eq!(
        verdict,
        Verdict {
            acked: verdict.acked,
            ..Verdict::default()
        },
        "acked messages lost after a power loss (first 20): {:?}",
        lost_ids.iter().take(20).collect::<Vec<_>>()
    );
    // And straight from each replica's own store (nodes stopped): every copy is the same.
    let layout = cluster_status(&nodes[0]).expect("status");
    let ids = nodes.iter_mut().enumerate().map(|(i, n)| (i as u64 + 1, n)).collect();
    stop_and_check_replicas(ids, &layout, &channels, &history).await;
}
