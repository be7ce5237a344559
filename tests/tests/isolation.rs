//! A node cut off from its peers campaigns in vain, and must do so without raising its
//! groups' terms: elections begin with a pre-vote that an unreachable peer does not grant.
//! Otherwise every failed campaign bumps a term, and the node, once healed, answers its
//! leaders with a newer term and deposes them (a leaderless blip on every partition it holds).
//!
//! Runs in a private network namespace (see `ringchat_tests::netns`), like `partition.rs`.

use std::time::Duration;

use ringchat_tests::netns::{isolated, Firewall};
use ringchat_tests::*;

const IPS: [&str; 3] = ["127.0.0.31", "127.0.0.32", "127.0.0.33"];
/// Long enough for several campaigns: the meta group's election timeout is 1–2 s, a partition
/// campaigns 0.5–1.5 s after its leader's beats stop.
const CUT: Duration = Duration::from_secs(6);

#[test]
fn a_node_cut_off_from_its_peers_does_not_raise_its_terms() {
    const NAME: &str = "a_node_cut_off_from_its_peers_does_not_raise_its_terms";
    let Some((firewall, rt)) = isolated(NAME) else {
        return;
    };
    rt.block_on(cut_off(&firewall));
}

async fn cut_off(firewall: &Firewall) {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _status) = start_cluster_at(&IPS, dir.path()).await;
    let before = metric_sum(&nodes[2], "ringchat_raft_term_max").await;
    firewall.isolate(IPS[2], &IPS[..2]);
    tokio::time::sleep(CUT).await;
    let elections = metric_sum(&nodes[2], "ringchat_raft_campaigns_total").await;
    let during = metric_sum(&nodes[2], "ringchat_raft_term_max").await;
    let dropped = firewall.heal();
    assert!(dropped > 0, "the cut matched no packet: the test did not test anything");
    assert!(elections > 0, "the cut-off node never campaigned: nothing was tested");
    assert_eq!(
        during, before,
        "the cut-off node raised its highest term from {before} to {during} in {CUT:?} ({elections} elections)"
    );
}
