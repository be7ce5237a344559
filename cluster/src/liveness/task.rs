//! The liveness task: beats to every peer, answers their beats, starts the elections of
//! leaderless groups and nudges stalled followers (see the module doc of `liveness`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::state::{send_beat, Beat, BeatReply, BEAT_EVERY, CHECK_EVERY, MARKS_EVERY};
use crate::cluster::Cluster;
use crate::meta::META_PARTITION;
use crate::types::{NodeId, PartitionRaft};

impl Cluster {
    /// Starts the task that beats to every peer and starts the elections openraft no longer
    /// starts; it ends when `stop` is cancelled (`Cluster::shutdown`) or the cluster is dropped.
    /// Runs on every node, peers or not: a single node's groups elect themselves here.
    pub(crate) fn spawn_liveness(self: &Arc<Self>, stop: CancellationToken) {
        let cluster = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_beat = Instant::now() - BEAT_EVERY;
            let mut last_marks = Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                let Some(cluster) = cluster.upgrade() else { return };
                if last_beat.elapsed() >= BEAT_EVERY {
                    last_beat = Instant::now();
                    cluster.beat_peers();
                    cluster.nudge_stalled_replication().await;
                    cluster.send_withheld_commits().await;
                }
                if last_marks.elapsed() >= MARKS_EVERY {
                    last_marks = Instant::now();
                    cluster.keep_marks();
                }
                cluster.campaign_where_leaderless().await;
            }
        });
    }

    /// Writes the durable marks if they moved and releases the groups that got back what
    /// they had lost (`lost_state.rs`).
    fn keep_marks(&self) {
        if let Ok(members) = self.members() {
            let peers = members
                .into_iter()
                .filter(|m| m.node_id != self.node_id)
                .map(|m| m.cluster_addr)
                .collect();
            self.store.marks.set_membership(ringchat_storage::Membership {
                partitions: self.partitions(),
                peers,
            });
        }
        if self.store.marks.changed() {
            // Two fsyncs: never on an async worker.
            let marks = self.store.marks.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = marks.write_if_changed_unless_busy() {
                    tracing::warn!(error = %e, "writing the Raft marks");
                }
            });
        }
        let groups = self
            .hosted
            .all()
            .into_iter()
            .chain(std::iter::once((META_PARTITION, self.meta.clone())));
        self.opener.lost_state.release_caught_up(groups);
    }

    /// The data partitions this node leads, with their terms.
    fn led_partitions(&self) -> Vec<(u16, u64)> {
        let mut transferring = self.liveness.transferring.lock().unwrap_or_else(|e| e.into_inner());
        let mut led = Vec::new();
        for (p, raft) in self.hosted.all() {
            let m = raft.metrics();
            let m = m.borrow_watched();
            if m.state != ServerState::Leader {
                // Whatever the hand-over's outcome, this node no longer leads `p`.
                transferring.remove(&p);
            } else if !transferring.contains(&p) {
                led.push((p, m.current_term));
            }
        }
        led
    }

    /// Sends this node's beat to every other member, each on its own task (a slow peer must not
    /// delay the others' beats); the answer names partitions to step down from.
    fn beat_peers(self: &Arc<Self>) {
        let Some(peers) = self.peers.clone() else { return };
        let Ok(members) = self.members() else { return };
        let beat = Beat {
            from: self.node_id,
            leads: self.led_partitions(),
        };
        // Dead members too: one that comes back must learn who leads before it campaigns.
        for m in members.into_iter().filter(|m| m.node_id != self.node_id) {
            let Ok(pipe) = peers.pipe(&m.cluster_addr) else {
                continue;
            };
            let beat = beat.clone();
            let cluster = Arc::downgrade(self);
            tokio::spawn(async move {
                let Ok(reply) = send_beat(&pipe, &beat, BEAT_EVERY).await else {
                    return;
                };
                let Some(cluster) = cluster.upgrade() else { return };
                for p in reply.stale {
                    if let Some(raft) = cluster.hosted.get(p) {
                        // A heartbeat reaches the voters, whose newer term deposes this leader.
                        let _ = raft.trigger().heartbeat().await;
                    }
                }
            });
        }
    }

    /// Heartbeats the groups led here in which a follower was behind at the last beat and has
    /// not moved since. Without per-group heartbeats nothing else would probe a follower whose
    /// replication stream broke (it restarted, or a call was lost) until the next write; the
    /// heartbeat's answer restarts replication from where the follower really is. A group
    /// whose followers keep up, busy or idle, is left alone.
    async fn nudge_stalled_replication(&self) {
        let mut stalled = Vec::new();
        {
            let mut seen = self
                .liveness
                .matched_at_last_beat
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut now_seen = HashMap::new();
            for (p, raft) in self.hosted.all() {
                let m = raft.metrics();
                let m = m.borrow_watched();
                if m.state != ServerState::Leader {
                    continue;
                }
                let matched: BTreeMap<NodeId, Option<u64>> = m
                    .replication
                    .as_ref()
                    .map(|r| r.iter().map(|(id, l)| (*id, l.as_ref().map(|l| l.index))).collect())
                    .unwrap_or_default();
                if let Some((last_log, before)) = seen.get(&p) {
                    let stuck = matched
                        .iter()
                        .any(|(id, now)| before.get(id) == Some(now) && now < last_log);
                    if stuck {
                        stalled.push(raft.clone());
                    }
                }
                now_seen.insert(p, (m.last_log_index, matched));
            }
            *seen = now_seen;
        }
        for raft in stalled {
            let _ = raft.trigger().heartbeat().await;
        }
    }

    /// Heartbeats the groups led here that withheld a commit from a follower a whole beat ago
    /// or more and have sent nothing since: the heartbeat carries it, so an idle group's
    /// followers apply what was committed (`rpc/withheld_commits.rs`).
    async fn send_withheld_commits(&self) {
        let Some(peers) = &self.peers else { return };
        let withheld = peers.withheld_commits();
        for p in withheld.overdue(BEAT_EVERY) {
            let leads = self.hosted.get(p).filter(|raft| {
                let m = raft.metrics();
                let leads = m.borrow_watched().state == ServerState::Leader;
                leads
            });
            match leads {
                Some(raft) => {
                    let _ = raft.trigger().heartbeat().await;
                }
                None => withheld.forget(p),
            }
        }
    }

    /// Answers a peer's beat: records it and lists the partitions it should heartbeat: those
    /// it claims but no longer leads (the heartbeat deposes it), and those that lost durable
    /// state here (the heartbeat opens the group if needed, and its refusal makes the leader
    /// replicate again from where this replica really is).
    pub(crate) fn on_beat(&self, beat: &Beat) -> BeatReply {
        self.liveness.record(beat);
        let stale = beat
            .leads
            .iter()
            .filter(|(p, term)| match self.hosted.get(*p) {
                // Not even open although this node had its state (a database set aside): the
                // leader's heartbeat opens the group and starts the refill.
                None => self.store.marks.get(*p).is_some(),
                Some(raft) => {
                    let m = raft.metrics();
                    let m = m.borrow_watched();
                    let deposed = m.current_term > *term && m.current_leader.is_some_and(|l| l != beat.from);
                    deposed || !self.opener.lost_state.may_lead(*p)
                }
            })
            .map(|(p, _)| *p)
            .collect();
        BeatReply { stale }
    }

    /// Starts a (pre-)vote in every group here that is a voter without a live leader and whose
    /// randomized timeout ran out. A group whose only voter is this node elects itself at once.
    async fn campaign_where_leaderless(&self) {
        let now = Instant::now();
        for (p, raft) in self.hosted.all() {
            let Some(pre_vote) = self.needs_election(&raft, p) else {
                self.liveness.settled(p);
                continue;
            };
            if pre_vote && !self.liveness.campaign_due(p, now) {
                continue;
            }
            crate::group_events::ELECTIONS_STARTED.record(p);
            metrics::counter!("ringchat_raft_campaigns_total").increment(1);
            let _ = raft.trigger().elect(pre_vote).await;
        }
    }

    /// `None` if group `p` has a live leader (or is not a voter here); otherwise whether its
    /// election should begin with a pre-vote (`false`: this node is the only voter).
    fn needs_election(&self, raft: &PartitionRaft, p: u16) -> Option<bool> {
        if !self.opener.lost_state.may_lead(p) {
            return None;
        }
        let m = raft.metrics();
        let m = m.borrow_watched();
        if m.state == ServerState::Leader {
            return None;
        }
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|v| v == self.node_id) {
            return None;
        }
        let sole_voter = membership.voter_ids().count() == 1;
        if sole_voter {
            return (m.state != ServerState::Candidate).then_some(false);
        }
        let leader_alive = match m.current_leader {
            Some(l) if l == self.node_id => false,
            Some(l) => self.liveness.leads(l, p),
            None => false,
        };
        (!leader_alive).then_some(true)
    }
}
