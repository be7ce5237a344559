//! Node-level liveness in place of per-group Raft heartbeats (quiescent partition groups).
//!
//! openraft heartbeats every group to every follower: with 64 partitions that is ~260
//! AppendEntries a second per node pair whether or not anything is written, and it cost an idle
//! 2-node cluster 0.3 cores (docs/raft-heartbeats.md). Instead, data partitions run with
//! openraft's heartbeats and elections off, and each node sends every peer one `Beat` per
//! `BEAT_EVERY` naming the partitions it leads (CockroachDB's coalesced heartbeats). A group
//! with nothing to replicate then sends nothing.
//!
//! Elections are started here instead of by openraft's timer: a voter whose group's leader is
//! unknown, or is a node that stopped beating or no longer claims the partition, starts a
//! pre-vote after a randomized timeout (the same 1–2 s openraft used). A pre-vote cannot unseat
//! a leader a quorum still follows, and the timeout is randomized per attempt so two voters
//! rarely campaign at once. A node that still claims a partition whose group has moved on to a
//! higher term is told so in the beat's answer and heartbeats that group once, which makes
//! openraft step it down.
//!
//! The meta group keeps openraft's own heartbeats: it is one group, and the meta leader reads
//! member silence from them (`meta/membership.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::rpc::member_proto::Json;
use crate::rpc::{Method, PeerPipe};
use crate::types::{NodeId, PartitionRaft};

/// How often a node beats to each peer.
pub const BEAT_EVERY: Duration = Duration::from_millis(250);
/// A leader counts as alive while its last beat is younger than this (three beats).
pub const BEAT_FRESH: Duration = Duration::from_millis(750);
/// A group without a live leader waits a random time in this range before it campaigns.
const CAMPAIGN_AFTER_MS: std::ops::Range<u64> = 500..1500;
/// How often the groups are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What a node tells each peer every `BEAT_EVERY`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Beat {
    pub from: NodeId,
    /// The data partitions `from` leads, with the term it leads each in.
    pub leads: Vec<(u16, u64)>,
}

/// The answer to a beat: the partitions the sender claims but whose group here follows a
/// newer term (the sender should find out it was deposed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BeatReply {
    pub stale: Vec<u16>,
}

/// The last beat from each peer, and when each local group without a live leader may campaign.
#[derive(Default)]
pub struct Liveness {
    beats: Mutex<HashMap<NodeId, Heard>>,
    campaign_at: Mutex<HashMap<u16, Instant>>,
    /// Per led partition, what each follower had matched at the last beat, and the last log
    /// index then: a follower that was behind and has not moved since is stalled.
    matched_at_last_beat: Mutex<HashMap<u16, Progress>>,
    /// Led partitions whose leadership this node is handing over. openraft's leader stops
    /// writing and heartbeating once a transfer starts and never resumes, counting on the
    /// followers' election timers if the target does not take over; here the beat stops
    /// claiming the partition instead, so the followers campaign if the hand-over is lost.
    transferring: Mutex<BTreeSet<u16>>,
}

/// A led group's last log index and each follower's matched index, at one beat.
type Progress = (Option<u64>, BTreeMap<NodeId, Option<u64>>);

struct Heard {
    at: Instant,
    leads: BTreeSet<u16>,
}

impl Liveness {
    /// Records `beat`, received now.
    pub fn record(&self, beat: &Beat) {
        let heard = Heard {
            at: Instant::now(),
            leads: beat.leads.iter().map(|(p, _)| *p).collect(),
        };
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(beat.from, heard);
    }

    /// True if `node` beat within `BEAT_FRESH` and claimed to lead `p` then.
    pub fn leads(&self, node: NodeId, p: u16) -> bool {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats
            .get(&node)
            .is_some_and(|h| h.at.elapsed() < BEAT_FRESH && h.leads.contains(&p))
    }

    /// True if `node` beat within `BEAT_FRESH`.
    pub fn is_alive(&self, node: NodeId) -> bool {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.get(&node).is_some_and(|h| h.at.elapsed() < BEAT_FRESH)
    }

    /// This node started handing the leadership of `p` over: its beats stop claiming `p`.
    pub fn transfer_started(&self, p: u16) {
        self.transferring.lock().unwrap_or_else(|e| e.into_inner()).insert(p);
    }

    /// Whether group `p`, without a live leader, should campaign now. The first call for a
    /// leaderless spell arms a random timeout; the call after it expires says yes and re-arms.
    fn campaign_due(&self, p: u16, now: Instant) -> bool {
        let mut at = self.campaign_at.lock().unwrap_or_else(|e| e.into_inner());
        match at.get(&p) {
            Some(due) if now >= *due => {
                at.insert(p, now + random_campaign_timeout());
                true
            }
            Some(_) => false,
            None => {
                at.insert(p, now + random_campaign_timeout());
                false
            }
        }
    }

    /// Group `p` has a live leader: the next leaderless spell starts a new timeout.
    fn settled(&self, p: u16) {
        self.campaign_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
    }
}

/// Sends `beat` over `pipe` and waits at most `ttl` for the answer.
async fn send_beat(pipe: &PeerPipe, beat: &Beat, ttl: Duration) -> Result<BeatReply, tonic::Status> {
    let reply = pipe
        .call::<_, Json>(Method::Beat, &Json { payload: encode(beat) }, ttl)
        .await?;
    decode(&reply.payload).map_err(|e| tonic::Status::internal(e.to_string()))
}

fn random_campaign_timeout() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(CAMPAIGN_AFTER_MS))
}

impl Cluster {
    /// Starts the task that beats to every peer and starts the elections openraft no longer
    /// starts; it ends when `stop` is cancelled (`Cluster::shutdown`) or the cluster is dropped.
    /// Runs on every node, peers or not: a single node's groups elect themselves here.
    pub(crate) fn spawn_liveness(self: &Arc<Self>, stop: CancellationToken) {
        let cluster = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_beat = Instant::now() - BEAT_EVERY;
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
                }
                cluster.campaign_where_leaderless().await;
            }
        });
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

    /// Answers a peer's beat: records it and lists what it claims but no longer leads.
    pub(crate) fn on_beat(&self, beat: &Beat) -> BeatReply {
        self.liveness.record(beat);
        let stale = beat
            .leads
            .iter()
            .filter(|(p, term)| {
                self.hosted.get(*p).is_some_and(|raft| {
                    let m = raft.metrics();
                    let m = m.borrow_watched();
                    m.current_term > *term && m.current_leader.is_some_and(|l| l != beat.from)
                })
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
            let _ = raft.trigger().elect(pre_vote).await;
        }
    }

    /// `None` if group `p` has a live leader (or is not a voter here); otherwise whether its
    /// election should begin with a pre-vote (`false`: this node is the only voter).
    fn needs_election(&self, raft: &PartitionRaft, p: u16) -> Option<bool> {
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
