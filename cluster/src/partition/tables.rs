//! Table ids and key builders of the partition state machine.
//!
//! Which partition a key lives in is decided by the router (`placement::partition_of` of the
//! id named in the comment); these functions only lay out bytes inside the partition.

use ringchat_storage::KeyBuf;

/// Applied log id and membership of the state machine.
pub const META: u8 = 0;
/// `[user_id]` → `UserRecord` (home partition).
pub const USER: u8 = 1;
/// `[user_id][channel_id]` → `UserChannelRecord` (home partition).
pub const USER_CHANNEL: u8 = 2;
/// `[user_id][device_id]` → `DeviceRecord` (home partition).
pub const DEVICE: u8 = 3;
/// `[user_id][device_id][channel_id]` → cursor `u64` (home partition).
pub const CURSOR: u8 = 4;
/// `[username]` → `UsernameRecord` (username partition).
pub const USERNAME: u8 = 5;
/// `[token_hash]` → `SessionRecord` (session partition).
pub const SESSION: u8 = 6;
/// `[channel_id]` → `ChannelRecord` (channel partition).
pub const CHANNEL: u8 = 7;
/// `[channel_id][seq]` → `MessageRecord` (channel partition).
pub const MESSAGE: u8 = 8;
/// `[channel_id][sender_id][client_msg_id]` → seq (channel partition).
pub const IDEMPOTENCY: u8 = 9;
/// `[channel_id][user_id]` → read marker `u64` (channel partition).
pub const READ_MARKER: u8 = 10;
/// `[channel_id][seq]` → `PushOutboxRecord` (channel partition).
pub const PUSH_OUTBOX: u8 = 11;
/// `[node_id as u64]` → `NodeInfo` (meta group).
pub const META_NODE: u8 = 12;
/// `layout` → `Layout` (meta group).
pub const META_LAYOUT: u8 = 13;
/// `dm-id-key` → the cluster's DM id key, 32 bytes (the partition of `DM_ID_KEY_ROUTE`).
pub const DM_ID_KEY: u8 = 14;
/// `[partition as u64]` → `MoveRecord`, the partition's latest move (meta group).
pub const META_MOVE: u8 = 15;
/// `[group id as u64]` → `GroupRecord`, a group named by a replica set (meta group).
pub const META_GROUP: u8 = 16;
/// `[partition as u64]` → the id of the group carrying it, when not its own (meta group).
pub const META_HOME: u8 = 17;
/// `highest` → the highest group id ever defined, so ids are never reused (meta group).
pub const META_GROUP_IDS: u8 = 18;

/// Meta key `applied`.
pub fn meta_applied(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META).raw(b"applied").build()
}
/// Meta key `membership`.
pub fn meta_membership(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META).raw(b"membership").build()
}
/// Meta key `ownership`: the partitions group `g` carries (`partition/ownership.rs`).
pub fn meta_ownership(g: u16) -> Vec<u8> {
    KeyBuf::new(g, META).raw(b"ownership").build()
}
/// User record key.
pub fn user(p: u16, user_id: &str) -> Vec<u8> {
    KeyBuf::new(p, USER).str(user_id).build()
}
/// Prefix of a user's channel links.
pub fn user_channels(p: u16, user_id: &str) -> Vec<u8> {
    KeyBuf::new(p, USER_CHANNEL).str(user_id).build()
}
/// One channel link of a user.
pub fn user_channel(p: u16, user_id: &str, channel_id: &str) -> Vec<u8> {
    KeyBuf::new(p, USER_CHANNEL).str(user_id).str(channel_id).build()
}
/// Prefix of a user's devices.
pub fn devices(p: u16, user_id: &str) -> Vec<u8> {
    KeyBuf::new(p, DEVICE).str(user_id).build()
}
/// One device.
pub fn device(p: u16, user_id: &str, device_id: &str) -> Vec<u8> {
    KeyBuf::new(p, DEVICE).str(user_id).str(device_id).build()
}
/// Prefix of one device's cursors.
pub fn cursors(p: u16, user_id: &str, device_id: &str) -> Vec<u8> {
    KeyBuf::new(p, CURSOR).str(user_id).str(device_id).build()
}
/// One device cursor in one channel.
pub fn cursor(p: u16, user_id: &str, device_id: &str, channel_id: &str) -> Vec<u8> {
    KeyBuf::new(p, CURSOR)
        .str(user_id)
        .str(device_id)
        .str(channel_id)
        .build()
}
/// Username claim.
pub fn username(p: u16, name: &str) -> Vec<u8> {
    KeyBuf::new(p, USERNAME).str(name).build()
}
/// Session by token hash.
pub fn session(p: u16, token_hash: &str) -> Vec<u8> {
    KeyBuf::new(p, SESSION).str(token_hash).build()
}
/// Channel record.
pub fn channel(p: u16, channel_id: &str) -> Vec<u8> {
    KeyBuf::new(p, CHANNEL).str(channel_id).build()
}
/// Prefix of a channel's messages, from the channel record's key (`channel`): the same bytes
/// under the message table.
pub fn channel_messages_of(channel_key: &[u8]) -> Vec<u8> {
    let mut prefix = channel_key.to_vec();
    if let Some(table) = prefix.get_mut(2) {
        *table = MESSAGE;
    }
    prefix
}
/// One message.
pub fn message(p: u16, channel_id: &str, seq: u64) -> Vec<u8> {
    KeyBuf::new(p, MESSAGE).str(channel_id).u64(seq).build()
}
/// Idempotency key of a sender's `client_msg_id`.
pub fn idempotency(p: u16, channel_id: &str, sender: &str, client_msg_id: &str) -> Vec<u8> {
    KeyBuf::new(p, IDEMPOTENCY)
        .str(channel_id)
        .str(sender)
        .str(client_msg_id)
        .build()
}
/// Read marker of a user in a channel.
pub fn read_marker(p: u16, channel_id: &str, user_id: &str) -> Vec<u8> {
    KeyBuf::new(p, READ_MARKER).str(channel_id).str(user_id).build()
}
/// Push outbox entry.
pub fn push_outbox(p: u16, channel_id: &str, seq: u64) -> Vec<u8> {
    KeyBuf::new(p, PUSH_OUTBOX).str(channel_id).u64(seq).build()
}
/// Prefix of the whole push outbox of a partition.
pub fn push_outbox_all(p: u16) -> Vec<u8> {
    KeyBuf::new(p, PUSH_OUTBOX).build()
}
/// One cluster member (meta group).
pub fn meta_node(p: u16, node_id: u64) -> Vec<u8> {
    KeyBuf::new(p, META_NODE).u64(node_id).build()
}
/// Prefix of all members (meta group).
pub fn meta_nodes(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_NODE).build()
}
/// The partition layout (meta group).
pub fn meta_layout(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_LAYOUT).raw(b"layout").build()
}

/// The latest move of data partition `partition` (meta group).
pub fn meta_move(p: u16, partition: u16) -> Vec<u8> {
    KeyBuf::new(p, META_MOVE).u64(u64::from(partition)).build()
}
/// Prefix of every partition's latest move (meta group).
pub fn meta_moves(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_MOVE).build()
}

/// One group named by a replica set (meta group).
pub fn meta_group(p: u16, group: u16) -> Vec<u8> {
    KeyBuf::new(p, META_GROUP).u64(u64::from(group)).build()
}
/// Prefix of every group named by a replica set (meta group).
pub fn meta_groups(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_GROUP).build()
}
/// The group carrying data partition `partition` (meta group).
pub fn meta_home(p: u16, partition: u16) -> Vec<u8> {
    KeyBuf::new(p, META_HOME).u64(u64::from(partition)).build()
}
/// Prefix of every partition's group (meta group).
pub fn meta_homes(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_HOME).build()
}
/// The highest group id ever defined (meta group).
pub fn meta_group_ids(p: u16) -> Vec<u8> {
    KeyBuf::new(p, META_GROUP_IDS).raw(b"highest").build()
}

/// The DM id key's key.
pub fn dm_id_key(p: u16) -> Vec<u8> {
    KeyBuf::new(p, DM_ID_KEY).raw(b"dm-id-key").build()
}
