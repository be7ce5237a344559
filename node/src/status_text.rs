//! `ringchat cluster status`: the PROTOCOL §4 object and the detail beside it (actual voters
//! and learners, reachability), as a summary first, the per-partition table on request, or
//! one JSON object that keeps the §4 fields exactly and adds the others beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use ringchat_cluster::clock::unix_ms;
use ringchat_cluster::meta::status_detail::StatusDetail;
use ringchat_cluster::meta::{ClusterStatus, MoveRecord};
use serde_json::{json, Value};

/// What one partition looks like once status and detail are put together.
struct PartitionView {
    partition: u32,
    /// Where it belongs: the placement over the active members when the node reports it,
    /// else a running move's destination, else the committed replicas.
    target: Vec<u64>,
    /// Its committed replicas are not its target yet: a move is running or still to start.
    pending: bool,
    /// Its latest committed move, if it ever moved (and the node reports them).
    last_move: Option<MoveRecord>,
    leader: Option<u64>,
    /// `None` when no leader answered (the committed layout is all that is known).
    voters: Option<Vec<u64>>,
    learners: Vec<u64>,
    moving: bool,
    under_replicated: bool,
}

impl PartitionView {
    /// Its latest move is recorded as running.
    fn move_running(&self) -> bool {
        self.last_move.as_ref().is_some_and(|m| m.finished_ms.is_none())
    }
}

/// Status and detail together, with the summary computed once for text and JSON.
pub struct StatusReport {
    status: ClusterStatus,
    has_detail: bool,
    reachable: BTreeMap<u64, bool>,
    partitions: Vec<PartitionView>,
    leaders: BTreeMap<u64, usize>,
    /// `(done, total)` moves of the latest rebalance (`rebalance_progress`), counting the
    /// pending partitions whose move has not started yet.
    rebalance: (usize, usize),
}

/// Moves that start within this long of the previous one's finish belong to one rebalance
/// (moves start once a second, or as soon as another ends).
const REBALANCE_GAP_MS: u64 = 2_000;

/// `(done, total)` of the latest rebalance: the last run of moves whose spans (start to
/// finish, a running one to now) follow one another with gaps under `REBALANCE_GAP_MS`, and
/// the `waiting` moves not started yet (spans starting now). Only up to 8 moves run at once,
/// so without the waiting ones the total would grow as the rebalance goes.
fn rebalance_progress(moves: &[&MoveRecord], waiting: usize, now_ms: u64) -> (usize, usize) {
    let mut spans: Vec<(u64, u64, bool)> = moves
        .iter()
        .map(|m| {
            (
                m.started_ms,
                m.finished_ms.unwrap_or(now_ms).max(m.started_ms),
                m.finished_ms.is_some(),
            )
        })
        .chain(std::iter::repeat_n((now_ms, now_ms, false), waiting))
        .collect();
    spans.sort_unstable();
    let (mut done, mut total, mut end) = (0, 0, 0u64);
    for (start, finish, finished) in spans {
        if total == 0 || start > end + REBALANCE_GAP_MS {
            (done, total) = (0, 0);
        }
        total += 1;
        done += usize::from(finished);
        end = end.max(finish);
    }
    (done, total)
}

impl StatusReport {
    /// Puts `status` and (if the node had it) `detail` together.
    pub fn new(status: ClusterStatus, detail: Option<StatusDetail>) -> Self {
        let has_detail = detail.is_some();
        let detail = detail.unwrap_or_default();
        let reachable: BTreeMap<u64, bool> = detail.members.iter().map(|m| (m.node_id, m.reachable)).collect();
        let dead: BTreeSet<u64> = status
            .members
            .iter()
            .filter(|m| m.state == "dead")
            .map(|m| m.node_id)
            .collect();
        let live = |id: &u64| !dead.contains(id) && reachable.get(id).copied().unwrap_or(true);
        let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
        let partitions = status
            .partitions
            .iter()
            .map(|p| {
                if let Some(l) = p.leader {
                    *leaders.entry(l).or_default() += 1;
                }
                let group = detail.groups.iter().find(|g| g.partition == p.partition);
                let voters = group.map(|g| g.voters.clone());
                let learners = group.map(|g| g.learners.clone()).unwrap_or_default();
                let last_move = detail
                    .moves
                    .iter()
                    .find(|m| m.partition == p.partition)
                    .map(|m| m.record.clone());
                let running = last_move.as_ref().filter(|m| m.finished_ms.is_none());
                let target_list = detail
                    .targets
                    .get(p.partition as usize)
                    .cloned()
                    .or_else(|| running.map(|m| m.to.clone()))
                    .unwrap_or_else(|| p.replicas.clone());
                let pending = target_list != p.replicas;
                let target: BTreeSet<u64> = target_list.iter().copied().collect();
                let actual: BTreeSet<u64> = voters.as_ref().map_or(target.clone(), |v| v.iter().copied().collect());
                PartitionView {
                    partition: p.partition,
                    moving: actual != target || !learners.is_empty() || running.is_some() || pending,
                    target: target_list,
                    pending,
                    last_move,
                    leader: p.leader,
                    under_replicated: p.leader.is_none() || actual.iter().filter(|id| live(id)).count() < target.len(),
                    voters,
                    learners,
                }
            })
            .collect::<Vec<PartitionView>>();
        let moves: Vec<&MoveRecord> = detail.moves.iter().map(|m| &m.record).collect();
        let waiting = partitions.iter().filter(|p| p.pending && !p.move_running()).count();
        let rebalance = rebalance_progress(&moves, waiting, unix_ms());
        StatusReport {
            status,
            has_detail,
            reachable,
            partitions,
            leaders,
            rebalance,
        }
    }

    fn reachable(&self, id: u64) -> Option<bool> {
        self.reachable.get(&id).copied()
    }

    fn ids(&self, pick: impl Fn(&PartitionView) -> bool) -> Vec<u32> {
        self.partitions
            .iter()
            .filter(|p| pick(p))
            .map(|p| p.partition)
            .collect()
    }

    /// One JSON object: the §4 fields exactly, and beside them `reachable` and `leads` per
    /// member, `voters`, `learners`, `moving` and `under_replicated` per partition, `summary`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.status).unwrap_or(Value::Null);
        if let Some(members) = v["members"].as_array_mut() {
            for m in members {
                let id = m["node_id"].as_u64().unwrap_or(0);
                m["reachable"] = json!(self.reachable(id));
                m["leads"] = json!(self.leaders.get(&id).copied().unwrap_or(0));
            }
        }
        if let Some(parts) = v["partitions"].as_array_mut() {
            for (p, view) in parts.iter_mut().zip(&self.partitions) {
                p["voters"] = json!(view.voters);
                p["learners"] = json!(view.learners);
                p["moving"] = json!(view.moving);
                p["under_replicated"] = json!(view.under_replicated);
                p["target"] = json!(view.target);
                p["pending"] = json!(view.pending);
                p["move"] = json!(view.last_move);
            }
        }
        let unreachable: Vec<u64> = self.reachable.iter().filter(|(_, r)| !**r).map(|(id, _)| *id).collect();
        v["summary"] = json!({
            "detail": self.has_detail,
            "leaders_per_node": self.leaders.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "without_leader": self.ids(|p| p.leader.is_none()),
            "under_replicated": self.ids(|p| p.under_replicated),
            "moving": self.ids(|p| p.moving),
            "moves_in_progress": self.ids(PartitionView::move_running),
            "pending": self.ids(|p| p.pending),
            "rebalance": {"done": self.rebalance.0, "total": self.rebalance.1},
            "unreachable": unreachable,
        });
        v
    }

    /// The human report: summary and members, then (with `partitions`) one line per partition.
    pub fn render(&self, partitions: bool) -> String {
        let s = &self.status;
        let mut out = String::new();
        let states: BTreeMap<&str, usize> = s.members.iter().fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m.state.as_str()).or_default() += 1;
            acc
        });
        let states: Vec<String> = states.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let unreachable: Vec<String> = self
            .reachable
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(id, _)| id.to_string())
            .collect();
        let _ = writeln!(out, "meta leader: {}", s.meta_leader);
        let _ = writeln!(
            out,
            "members: {} ({}){}",
            s.members.len(),
            states.join(", "),
            if unreachable.is_empty() {
                String::new()
            } else {
                format!("; unreachable: {}", unreachable.join(","))
            }
        );
        let _ = writeln!(
            out,
            "  {:>4}  {:<9} {:<10} {:>5}  {:<22} client",
            "node", "state", "reachable", "leads", "cluster"
        );
        for m in &s.members {
            let reach = match self.reachable(m.node_id) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let _ = writeln!(
                out,
                "  {:>4}  {:<9} {:<10} {:>5}  {:<22} {}",
                m.node_id,
                m.state,
                reach,
                self.leaders.get(&m.node_id).copied().unwrap_or(0),
                m.cluster_addr,
                m.client_addr
            );
        }
        let list = |ids: Vec<u32>| -> String {
            if ids.is_empty() {
                "0".to_string()
            } else {
                let shown: Vec<String> = ids.iter().take(16).map(u32::to_string).collect();
                let more = if ids.len() > 16 { ",…" } else { "" };
                format!("{} [{}{more}]", ids.len(), shown.join(","))
            }
        };
        let _ = writeln!(
            out,
            "partitions: {}; without a leader: {}; under-replicated: {}; moving: {}",
            self.partitions.len(),
            list(self.ids(|p| p.leader.is_none())),
            list(self.ids(|p| p.under_replicated)),
            list(self.ids(|p| p.moving)),
        );
        let _ = writeln!(
            out,
            "moves in progress: {}; still to move: {}; latest rebalance: {} of {} moves done",
            list(self.ids(PartitionView::move_running)),
            list(self.ids(|p| p.pending && !p.move_running())),
            self.rebalance.0,
            self.rebalance.1,
        );
        if !self.has_detail {
            let _ = writeln!(
                out,
                "(this node reports no voters/learners or reachability: an older release)"
            );
        }
        if !partitions {
            let _ = writeln!(out, "(--partitions for one line per partition)");
            return out;
        }
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        for p in &self.partitions {
            let leader = p.leader.map_or("-".to_string(), |l| l.to_string());
            let voters = p.voters.as_deref().map_or("?".to_string(), ids);
            let mut flags = Vec::new();
            if p.moving {
                flags.push("moving");
            }
            if p.under_replicated {
                flags.push("under-replicated");
            }
            let movement = match &p.last_move {
                Some(m) => match m.finished_ms {
                    None => format!(
                        "  moving from [{}] for {} s",
                        ids(&m.from),
                        unix_ms().saturating_sub(m.started_ms) / 1000
                    ),
                    Some(done) => format!(
                        "  last move from [{}] took {:.1} s",
                        ids(&m.from),
                        done.saturating_sub(m.started_ms) as f64 / 1000.0
                    ),
                },
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:>4}  target [{}]  voters [{}]  learners [{}]  leader {}  {}{}",
                p.partition,
                ids(&p.target),
                voters,
                ids(&p.learners),
                leader,
                flags.join(" "),
                movement
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringchat_cluster::meta::status_detail::{GroupDetail, MemberReach, PartitionMove};
    use ringchat_cluster::meta::{MemberStatus, PartitionStatus};

    fn member(id: u64, state: &str) -> MemberStatus {
        MemberStatus {
            node_id: id,
            cluster_addr: format!("127.0.0.1:{}", 7000 + id),
            client_addr: format!("127.0.0.1:{}", 8000 + id),
            state: state.into(),
        }
    }

    fn report() -> StatusReport {
        let status = ClusterStatus {
            meta_leader: 1,
            members: vec![member(1, "active"), member(2, "active"), member(3, "active")],
            partitions: vec![
                PartitionStatus {
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    leader: Some(1),
                },
                PartitionStatus {
                    partition: 1,
                    replicas: vec![2, 3, 1],
                    leader: Some(2),
                },
                PartitionStatus {
                    partition: 2,
                    replicas: vec![3, 1, 2],
                    leader: None,
                },
            ],
        };
        let group = |p, leader, voters: &[u64], learners: &[u64]| GroupDetail {
            partition: p,
            leader,
            term: 3,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        };
        let detail = StatusDetail {
            members: vec![
                MemberReach {
                    node_id: 1,
                    reachable: true,
                },
                MemberReach {
                    node_id: 2,
                    reachable: true,
                },
                MemberReach {
                    node_id: 3,
                    reachable: false,
                },
            ],
            groups: vec![group(0, 1, &[1, 2, 3], &[]), group(1, 2, &[2, 1], &[3])],
            meta_members: vec![1, 2, 3],
            moves: vec![
                PartitionMove {
                    partition: 0,
                    record: MoveRecord {
                        from: vec![1, 2, 4],
                        to: vec![1, 2, 3],
                        started_ms: 1_000,
                        finished_ms: Some(3_500),
                    },
                },
                PartitionMove {
                    partition: 1,
                    record: MoveRecord {
                        from: vec![2, 1, 4],
                        to: vec![2, 3, 1],
                        started_ms: 3_000,
                        finished_ms: None,
                    },
                },
            ],
            targets: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
        };
        StatusReport::new(status, Some(detail))
    }

    #[test]
    fn json_keeps_the_protocol_fields_and_adds_the_summary_beside_them() {
        let v = report().to_json();
        assert_eq!(v["meta_leader"], 1);
        assert_eq!(
            v["members"][0].as_object().map(|m| m
                .keys()
                .filter(|k| ["node_id", "cluster_addr", "client_addr", "state"].contains(&k.as_str()))
                .count()),
            Some(4)
        );
        assert_eq!(v["partitions"][0]["replicas"], json!([1, 2, 3]));
        assert_eq!(v["partitions"][2]["leader"], Value::Null);
        assert_eq!(v["members"][2]["reachable"], false);
        assert_eq!(v["partitions"][1]["voters"], json!([2, 1]));
        assert_eq!(v["partitions"][1]["learners"], json!([3]));
        // 0: all three voters, but 3 is unreachable; 1: moving (3 a learner); 2: no leader.
        assert_eq!(v["summary"]["moving"], json!([1]));
        assert_eq!(v["summary"]["under_replicated"], json!([0, 1, 2]));
        assert_eq!(v["summary"]["without_leader"], json!([2]));
        assert_eq!(v["summary"]["unreachable"], json!([3]));
        assert_eq!(v["summary"]["leaders_per_node"], json!({"1": 1, "2": 1}));
        // 0's move finished, 1's runs: it is the target and it counts as one of two moves.
        assert_eq!(v["partitions"][1]["target"], json!([2, 3, 1]));
        assert_eq!(v["partitions"][1]["move"]["from"], json!([2, 1, 4]));
        assert_eq!(v["partitions"][0]["move"]["finished_ms"], json!(3_500));
        assert_eq!(v["partitions"][2]["move"], Value::Null);
        assert_eq!(v["summary"]["moves_in_progress"], json!([1]));
        assert_eq!(v["summary"]["rebalance"], json!({"done": 1, "total": 2}));
        assert_eq!(v["summary"]["pending"], json!([]));
    }

    #[test]
    fn a_partition_whose_replicas_are_not_its_target_is_pending() {
        let mut r = report();
        // Node 4 joined: partition 2 belongs on [3, 4, 1] and its move has not started.
        r = StatusReport::new(
            r.status.clone(),
            Some(StatusDetail {
                targets: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 4, 1]],
                ..StatusDetail::default()
            }),
        );
        let v = r.to_json();
        assert_eq!(v["partitions"][2]["target"], json!([3, 4, 1]));
        assert_eq!(v["partitions"][2]["pending"], true);
        assert_eq!(v["summary"]["pending"], json!([2]));
        assert_eq!(v["summary"]["moving"], json!([2]));
        assert_eq!(v["summary"]["rebalance"], json!({"done": 0, "total": 1}));
        assert!(r.render(false).contains("still to move: 1 [2]"), "{}", r.render(false));
    }

    #[test]
    fn a_rebalance_is_the_latest_run_of_moves_that_follow_one_another() {
        let m = |started_ms, finished_ms| MoveRecord {
            from: vec![1],
            to: vec![2],
            started_ms,
            finished_ms,
        };
        let (old, a, b, c) = (
            m(0, Some(500)),
            m(60_000, Some(61_000)),
            m(61_500, None),
            m(60_200, Some(70_000)),
        );
        assert_eq!(rebalance_progress(&[&old, &a, &b, &c], 0, 80_000), (2, 3));
        assert_eq!(rebalance_progress(&[&old], 0, 80_000), (1, 1));
        assert_eq!(rebalance_progress(&[], 0, 80_000), (0, 0));
        // Moves not started yet belong to the running rebalance, or start a new one.
        assert_eq!(rebalance_progress(&[&old, &a, &b, &c], 5, 80_000), (2, 8));
        assert_eq!(rebalance_progress(&[&old, &a, &c], 5, 80_000), (0, 5));
    }

    #[test]
    fn the_text_puts_the_summary_first_and_the_table_behind_a_flag() {
        let r = report();
        let short = r.render(false);
        assert!(short.contains("unreachable: 3"), "{short}");
        assert!(short.contains("moving: 1 [1]"), "{short}");
        assert!(
            short.contains("moves in progress: 1 [1]; still to move: 0; latest rebalance: 1 of 2 moves done"),
            "{short}"
        );
        assert!(!short.contains("target ["), "{short}");
        let long = r.render(true);
        assert!(
            long.contains("target [2,3,1]  voters [2,1]  learners [3]  leader 2  moving"),
            "{long}"
        );
    }
}
