//! The liveness state every node keeps: the last beat heard from each peer, per-group
//! campaign timeouts, what each led group's followers had matched, and the hand-overs in
//! progress; plus the beat's wire types. It knows nothing of `Cluster` (the task that drives
//! it is `task.rs`), so the cluster can hold one without an import circle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::rpc::member_proto::Json;
use crate::rpc::{Method, PeerPipe};
use crate::types::NodeId;

/// How often a node beats to each peer.
pub const BEAT_EVERY: Duration = Duration::from_millis(250);
/// A leader counts as alive while its last beat is younger than this (three beats).
pub const BEAT_FRESH: Duration = Duration::from_millis(750);
/// A group without a live leader waits a random time in this range before it campaigns.
pub(super) const CAMPAIGN_AFTER_MS: std::ops::Range<u64> = 500..1500;
/// How often the groups are looked at.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often the durable Raft marks are written (if they moved) and the groups that lost
/// state are checked for having caught up: a loss younger than this is not detected after a
/// crash (a clean stop writes them last).
pub(super) const MARKS_EVERY: Duration = Duration::from_secs(1);

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
    pub(super) matched_at_last_beat: Mutex<HashMap<u16, Progress>>,
    /// Led partitions whose leadership this node is handing over. openraft's leader stops
    /// writing and heartbeating once a transfer starts and never resumes, counting on the
    /// followers' election timers if the target does not take over; here the beat stops
    /// claiming the partition instead, so the followers campaign if the hand-over is lost.
    pub(super) transferring: Mutex<BTreeSet<u16>>,
}

/// A led group's last log index and each follower's matched index, at one beat.
pub(super) type Progress = (Option<u64>, BTreeMap<NodeId, Option<u64>>);

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
    pub(super) fn campaign_due(&self, p: u16, now: Instant) -> bool {
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
    pub(super) fn settled(&self, p: u16) {
        self.campaign_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
    }
}

/// Sends `beat` over `pipe` and waits at most `ttl` for the answer.
pub(super) async fn send_beat(pipe: &PeerPipe, beat: &Beat, ttl: Duration) -> Result<BeatReply, tonic::Status> {
    let reply = pipe
        .call::<_, Json>(Method::Beat, &Json { payload: encode(beat) }, ttl)
        .await?;
    decode(&reply.payload).map_err(|e| tonic::Status::internal(e.to_string()))
}

pub(super) fn random_campaign_timeout() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(CAMPAIGN_AFTER_MS))
}
