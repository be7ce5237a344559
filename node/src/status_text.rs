//! Human-readable `ringchat cluster status`.

use std::fmt::Write;

use ringchat_cluster::meta::ClusterStatus;

/// Renders the status as a short report: members, then partitions grouped by replica set.
pub fn render(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "meta leader: {}", status.meta_leader);
    let _ = writeln!(out, "members:");
    for m in &status.members {
        let _ = writeln!(
            out,
            "  {:>4}  {:<9} cluster {:<22} client {}",
            m.node_id, m.state, m.cluster_addr, m.client_addr
        );
    }
    let leaderless = status.partitions.iter().filter(|p| p.leader.is_none()).count();
    let _ = writeln!(
        out,
        "partitions: {} ({} without a known leader)",
        status.partitions.len(),
        leaderless
    );
    for p in &status.partitions {
        let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
        let leader = p.leader.map_or("-".to_string(), |l| l.to_string());
        let _ = writeln!(
            out,
            "  {:>4}  replicas [{}]  leader {}",
            p.partition,
            replicas.join(","),
            leader
        );
    }
    out
}
