//! Commands replicated through a partition's Raft log, and what applying them returns.
//!
//! Commands carry every non-deterministic input (ids, timestamps, hashes) so that every replica
//! applying the same log reaches the same state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::meta::model::GroupRecord;
use crate::meta::{Layout, MoveRecord, NodeInfo};
use crate::model::*;

/// A state machine command. Each targets one partition (the router picks it from the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Claim `username` for `user_id` (username partition). Taken → `Conflict`.
    ClaimUsername {
        /// Lowercase name.
        username: String,
        /// New owner.
        record: UsernameRecord,
    },
    /// Create the user record if absent (home partition); idempotent.
    EnsureUser {
        /// The record to create.
        user: UserRecord,
    },
    /// Create a device if absent, with starting cursors (home partition).
    CreateDevice {
        /// Owner.
        user_id: String,
        /// The device.
        device: DeviceRecord,
        /// `(channel_id, last_seq)` at creation: the device starts reading after these.
        cursors: Vec<(String, u64)>,
    },
    /// Register a device for push (home partition).
    SetPush {
        /// Owner.
        user_id: String,
        /// Device.
        device_id: String,
        /// Target.
        push: PushTarget,
    },
    /// Record when the user's last connection ended (home partition).
    SetLastSeen {
        /// User.
        user_id: String,
        /// Unix ms.
        ms: u64,
    },
    /// Store a session under its token hash (session partition).
    CreateSession {
        /// Hex SHA-256 of the token.
        token_hash: String,
        /// The session.
        session: SessionRecord,
    },
    /// Revoke a session (session partition).
    DeleteSession {
        /// Hex SHA-256 of the token.
        token_hash: String,
    },
    /// Create a channel if absent (channel partition); returns the stored record.
    CreateChannel {
        /// The channel; `last_seq` must be 0.
        channel: ChannelRecord,
        /// Member limit in force.
        max_members: usize,
    },
    /// Add a member to a group (channel partition).
    AddMember {
        /// Channel.
        channel_id: String,
        /// Member doing the adding (must be a member).
        actor: String,
        /// New member.
        user_id: String,
        /// Member limit in force.
        max_members: usize,
    },
    /// Remove a member from a group (channel partition).
    RemoveMember {
        /// Channel.
        channel_id: String,
        /// Who asks (the member itself, or the creator).
        actor: String,
        /// Who leaves.
        user_id: String,
    },
    /// Record that a user is in a channel (home partition); idempotent.
    LinkUserChannel {
        /// User.
        user_id: String,
        /// Channel.
        channel_id: String,
        /// The channel's `last_seq` at join.
        join_seq: u64,
    },
    /// Forget that a user is in a channel (home partition); idempotent.
    UnlinkUserChannel {
        /// User.
        user_id: String,
        /// Channel.
        channel_id: String,
    },
    /// Commit a message: assigns `last_seq + 1`, or returns the original for a retried
    /// `client_msg_id` (channel partition).
    SendMessage {
        /// Channel.
        channel_id: String,
        /// Author (must be a member).
        sender_id: String,
        /// Validated text.
        text: String,
        /// Idempotency key.
        client_msg_id: Option<String>,
        /// Commit time chosen by the proposer.
        ts: u64,
        /// Write a push outbox entry (a push gateway is configured).
        push: bool,
    },
    /// Move a device's cursor forward (home partition); never backwards.
    Ack {
        /// User.
        user_id: String,
        /// Device.
        device_id: String,
        /// Channel.
        channel_id: String,
        /// Highest seq the device has.
        seq: u64,
    },
    /// Move a user's read marker forward (channel partition).
    SetReadMarker {
        /// Channel.
        channel_id: String,
        /// Reader.
        user_id: String,
        /// Highest seq read.
        seq: u64,
    },
    /// Drop a push outbox entry once every push for it got a 2xx (channel partition).
    PushDone {
        /// Channel.
        channel_id: String,
        /// Seq.
        seq: u64,
    },
    /// Add or update a cluster member (meta group only).
    MetaUpsertNode {
        /// The member as it should now be recorded.
        node: NodeInfo,
    },
    /// Replace the partition layout if `layout.version` is newer (meta group only).
    MetaSetLayout {
        /// The new layout.
        layout: Layout,
    },
    /// Store the cluster's DM id key if none is stored yet; answers `Key` with the stored one
    /// (the partition of `DM_ID_KEY_ROUTE`). Appended last: variants are numbered by position.
    EnsureDmIdKey {
        /// A fresh random key, kept only if the cluster has none.
        key: Vec<u8>,
    },
    /// Several commands of one partition packed into one log entry by its leader while the
    /// group was busy (`partition/proposal_packer.rs`), applied in order in one batch and
    /// answered with `Response::Batch` in the same order. Never nested. Appended last.
    Batch(Vec<Command>),
    /// Record the latest move of `partition` (meta group only): a newer start replaces the
    /// record, a finish completes the start it names. Appended last; written only once every
    /// meta member reads it (`rpc::MOVE_RECORDS`).
    MetaRecordMove {
        /// Data partition.
        partition: u16,
        /// The move as it stands.
        record: MoveRecord,
    },
    /// `command` addressed to `partition` by name, for a group that carries several
    /// partitions (docs/raft-groups.md). A bare command means the group's own partition, the
    /// only one a group had before; applied only while the group owns `partition`, else
    /// answered `ApplyError::NotHere`. May sit inside a `Batch`; never holds a `Batch` or
    /// another `For`. Appended last; proposed only to groups whose members all read it.
    For {
        /// The partition whose keys the command changes.
        partition: u16,
        /// The command.
        command: Box<Command>,
    },
    /// The group takes `partition` over (or lifts its fence): from this entry on, commands
    /// naming it apply here. Each replica applies it only once its own replica of group
    /// `from` has applied that group's log up to `after` (the fence there), so the keys it
    /// takes over are the partition's state at the fence (`partition/ownership.rs`). `from`
    /// equal to this group's own id (lifting its own fence) waits for nothing. Appended last,
    /// like `For`.
    Adopt {
        /// Data partition.
        partition: u16,
        /// The group that carried it.
        from: u16,
        /// The log index of `from`'s fence of it.
        after: u64,
    },
    /// Commands naming `partition` are refused from this entry on: its keys are frozen while
    /// they are copied to the group taking it over. Answered with `Response::Position` of its
    /// own log index (what the adopting group's `Adopt` waits for). Appended last, like `For`.
    Fence {
        /// Data partition.
        partition: u16,
    },
    /// The group no longer carries `partition` (another group adopted it). Appended last,
    /// like `For`.
    Release {
        /// Data partition.
        partition: u16,
    },
    /// Define a group named by a replica set (meta group). A new id must be above every id
    /// defined before (ids are never reused); the same definition again is a no-op, another
    /// one under a used id a `Conflict`. Appended last, like `For`.
    MetaDefineGroup {
        /// The group.
        group: GroupRecord,
    },
    /// Forget a group that carries nothing any more (meta group); refused while a partition's
    /// home is it. Appended last, like `For`.
    MetaDropGroup {
        /// Group id.
        id: u16,
    },
    /// Make `group` the home of `partition` (meta group): the router sends its commands
    /// there from this entry on. Its own id means its own group again. The group must be
    /// defined. Appended last, like `For`.
    MetaSetHome {
        /// Data partition.
        partition: u16,
        /// The group carrying it.
        group: u16,
    },
}

/// The routing key of the partition that holds the DM id key.
pub const DM_ID_KEY_ROUTE: &str = "cluster:dm-id-key";

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: message text and hashes stay out of logs.
        let name = match self {
            Command::ClaimUsername { .. } => "ClaimUsername",
            Command::EnsureUser { .. } => "EnsureUser",
            Command::CreateDevice { .. } => "CreateDevice",
            Command::SetPush { .. } => "SetPush",
            Command::SetLastSeen { .. } => "SetLastSeen",
            Command::CreateSession { .. } => "CreateSession",
            Command::DeleteSession { .. } => "DeleteSession",
            Command::CreateChannel { .. } => "CreateChannel",
            Command::AddMember { .. } => "AddMember",
            Command::RemoveMember { .. } => "RemoveMember",
            Command::LinkUserChannel { .. } => "LinkUserChannel",
            Command::UnlinkUserChannel { .. } => "UnlinkUserChannel",
            Command::SendMessage { .. } => "SendMessage",
            Command::Ack { .. } => "Ack",
            Command::SetReadMarker { .. } => "SetReadMarker",
            Command::PushDone { .. } => "PushDone",
            Command::MetaUpsertNode { .. } => "MetaUpsertNode",
            Command::MetaSetLayout { .. } => "MetaSetLayout",
            Command::EnsureDmIdKey { .. } => "EnsureDmIdKey",
            Command::Batch(..) => "Batch",
            Command::MetaRecordMove { .. } => "MetaRecordMove",
            Command::For { command, .. } => return write!(f, "For({command})"),
            Command::Adopt { .. } => "Adopt",
            Command::Fence { .. } => "Fence",
            Command::Release { .. } => "Release",
            Command::MetaDefineGroup { .. } => "MetaDefineGroup",
            Command::MetaDropGroup { .. } => "MetaDropGroup",
            Command::MetaSetHome { .. } => "MetaSetHome",
        };
        f.write_str(name)
    }
}

/// A rule the state machine enforced while applying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The channel (or other target) does not exist.
    #[error("not found")]
    NotFound,
    /// The actor is not allowed to do this.
    #[error("forbidden")]
    Forbidden,
    /// The group is at its member limit.
    #[error("group is full")]
    GroupFull,
    /// The request is not valid for this target (e.g. member calls on a DM).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A unique value is taken.
    #[error("conflict")]
    Conflict,
    /// The group does not own the command's partition (it moved to another group): the
    /// router looks the partition up again and retries. Appended last.
    #[error("the partition is not in this group")]
    NotHere,
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub enum Response {
    /// Done, nothing to report (also blank and membership entries).
    #[default]
    Done,
    /// The channel as stored after the command; `changed` is false when nothing changed
    /// (channel existed, member already present or absent).
    Channel {
        /// The record.
        channel: ChannelRecord,
        /// Whether the command changed it.
        changed: bool,
    },
    /// A message committed (or found again for a retried `client_msg_id`). A leader answering
    /// a forwarded send sends it back without text and members (`for_forwarder`): the leader
    /// delivers the message itself, the sender's node needs only its position.
    Sent {
        /// The message.
        message: MessageRecord,
        /// Members at commit time: the fan-out targets.
        members: Vec<String>,
        /// True if this was a retry and nothing new was committed.
        duplicate: bool,
    },
    /// The cursor or marker after the command.
    Position(u64),
    /// The command broke a rule.
    Rejected(ApplyError),
    /// A stored secret key (`EnsureDmIdKey`). Appended last, like its command.
    Key(Vec<u8>),
    /// The answers to a `Command::Batch`, one per command, in its order. Appended last.
    Batch(Vec<Response>),
}

impl Response {
    /// What a leader sends back to the node that forwarded the write: a `Sent` without the
    /// message's text and the members (the leader delivered it; the sender's node answers
    /// `sent {seq, ts}` from the rest), everything else as it is.
    pub fn for_forwarder(self) -> Response {
        match self {
            Response::Sent {
                mut message, duplicate, ..
            } => {
                message.text = String::new();
                Response::Sent {
                    message,
                    members: Vec::new(),
                    duplicate,
                }
            }
            other => other,
        }
    }
}

impl Command {
    /// The command as the partition leader proposes it: a message is stamped with the
    /// leader's clock (one clock per partition at a time, not every gateway's).
    pub fn stamped(mut self, now_ms: u64) -> Self {
        self.stamp(now_ms);
        self
    }

    fn stamp(&mut self, now_ms: u64) {
        match self {
            Command::SendMessage { ts, .. } => *ts = now_ms,
            Command::Batch(commands) => commands.iter_mut().for_each(|c| c.stamp(now_ms)),
            Command::For { command, .. } => command.stamp(now_ms),
            _ => {}
        }
    }
}
