//! Reads of one partition's state as data: a `Query` names what to read, `execute` answers it
//! from a local store.
//!
//! Reads are data (like `Command` for writes) so the router can send them to the partition
//! leader over the network and run them there; `execute` is pure storage code, so the leader and
//! a single node answer a query the same way.

use std::collections::HashMap;

use ringchat_storage::{KeyReader, StorageError, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::partition::channel_position;
use crate::partition::tables as t;

/// A read of one partition's state. The partition is given beside it (the caller computed it
/// from the key), so the same query can be sent to whichever node leads that partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// A user by id (home partition).
    User {
        /// User id.
        user_id: String,
    },
    /// A username claim with its credential (username partition).
    Username {
        /// Lowercase name.
        username: String,
    },
    /// A session by token hash (session partition).
    Session {
        /// Hex SHA-256 of the token.
        token_hash: String,
    },
    /// Every device of a user (home partition).
    Devices {
        /// Owner.
        user_id: String,
    },
    /// One device of a user (home partition).
    Device {
        /// Owner.
        user_id: String,
        /// Device.
        device_id: String,
    },
    /// A device's stored cursors by channel (home partition).
    Cursors {
        /// Owner.
        user_id: String,
        /// Device.
        device_id: String,
    },
    /// The channels a user is in, with the seq they joined at (home partition).
    UserChannels {
        /// User.
        user_id: String,
    },
    /// A channel (channel partition).
    Channel {
        /// Channel.
        channel_id: String,
    },
    /// A user's read marker in a channel (channel partition); 0 if none.
    ReadMarker {
        /// Channel.
        channel_id: String,
        /// User.
        user_id: String,
    },
    /// Stored messages `from..=to` of a channel, ascending, stopping at the first gap (channel
    /// partition). Callers bound the range; the answer holds only messages that exist.
    Messages {
        /// Channel.
        channel_id: String,
        /// First seq.
        from: u64,
        /// Last seq (inclusive).
        to: u64,
    },
    /// Every pending push outbox entry of the partition.
    PushOutbox,
}

/// The answer to a `Query`; the variant matches the query's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryResult {
    /// Answer to `Query::User`.
    User(Option<UserRecord>),
    /// Answer to `Query::Username`.
    Username(Option<UsernameRecord>),
    /// Answer to `Query::Session`.
    Session(Option<SessionRecord>),
    /// Answer to `Query::Devices`.
    Devices(Vec<DeviceRecord>),
    /// Answer to `Query::Device`.
    Device(Option<DeviceRecord>),
    /// Answer to `Query::Cursors`.
    Cursors(HashMap<String, u64>),
    /// Answer to `Query::UserChannels`: `(channel_id, join_seq)`.
    UserChannels(Vec<(String, u64)>),
    /// Answer to `Query::Channel`.
    Channel(Option<ChannelRecord>),
    /// Answer to `Query::ReadMarker`.
    ReadMarker(u64),
    /// Answer to `Query::Messages`.
    Messages(Vec<MessageRecord>),
    /// Answer to `Query::PushOutbox`.
    PushOutbox(Vec<PushOutboxRecord>),
}

impl QueryResult {
    /// Short name of the variant, for "wrong answer" errors.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryResult::User(_) => "User",
            QueryResult::Username(_) => "Username",
            QueryResult::Session(_) => "Session",
            QueryResult::Devices(_) => "Devices",
            QueryResult::Device(_) => "Device",
            QueryResult::Cursors(_) => "Cursors",
            QueryResult::UserChannels(_) => "UserChannels",
            QueryResult::Channel(_) => "Channel",
            QueryResult::ReadMarker(_) => "ReadMarker",
            QueryResult::Messages(_) => "Messages",
            QueryResult::PushOutbox(_) => "PushOutbox",
        }
    }
}

/// Answers `query` for partition `p` from `store`'s state machine keyspace.
///
/// It reads whatever this replica has applied: the caller decides whether that is fresh enough
/// (the router runs it on the leader).
pub fn execute(store: &Store, p: u16, query: &Query) -> Result<QueryResult, StorageError> {
    Ok(match query {
        Query::User { user_id } => QueryResult::User(get(store, t::user(p, user_id))?),
        Query::Username { username } => QueryResult::Username(get(store, t::username(p, username))?),
        Query::Session { token_hash } => QueryResult::Session(get(store, t::session(p, token_hash))?),
        Query::Devices { user_id } => QueryResult::Devices(
            scan::<DeviceRecord>(store, t::devices(p, user_id), 1)?
                .into_iter()
                .map(|(_, d)| d)
                .collect(),
        ),
        Query::Device { user_id, device_id } => QueryResult::Device(get(store, t::device(p, user_id, device_id))?),
        Query::Cursors { user_id, device_id } => QueryResult::Cursors(
            scan::<u64>(store, t::cursors(p, user_id, device_id), 2)?
                .into_iter()
                .filter_map(|(mut k, v)| k.pop().map(|c| (c, v)))
                .collect(),
        ),
        Query::UserChannels { user_id } => QueryResult::UserChannels(
            scan::<UserChannelRecord>(store, t::user_channels(p, user_id), 1)?
                .into_iter()
                .filter_map(|(mut k, v)| k.pop().map(|c| (c, v.join_seq)))
                .collect(),
        ),
        Query::Channel { channel_id } => QueryResult::Channel(channel(store, p, channel_id)?),
        Query::ReadMarker { channel_id, user_id } => {
            QueryResult::ReadMarker(get(store, t::read_marker(p, channel_id, user_id))?.unwrap_or(0))
        }
        Query::Messages { channel_id, from, to } => QueryResult::Messages(messages(store, p, channel_id, *from, *to)?),
        Query::PushOutbox => {
            let mut out = Vec::new();
            for item in store.sm.prefix(t::push_outbox_all(p)) {
                let (_, v) = item.into_inner().map_err(StorageError::from)?;
                out.push(crate::codec::decode(&v)?);
            }
            QueryResult::PushOutbox(out)
        }
    })
}

fn get<T: DeserializeOwned>(store: &Store, key: Vec<u8>) -> Result<Option<T>, StorageError> {
    match store.sm.get(key).map_err(StorageError::from)? {
        Some(v) => Ok(Some(crate::codec::decode(&v)?)),
        None => Ok(None),
    }
}

/// A channel record at its current position: the stored record raised to its newest message
/// (`partition/channel_position.rs`).
fn channel(store: &Store, p: u16, channel_id: &str) -> Result<Option<ChannelRecord>, StorageError> {
    let key = t::channel(p, channel_id);
    let Some(mut record) = get::<ChannelRecord>(store, key.clone())? else {
        return Ok(None);
    };
    let newest = channel_position::newest_stored(&store.sm, &t::channel_messages_of(&key))?;
    channel_position::raise(&mut record, newest);
    Ok(Some(record))
}

/// Scans `prefix`, returning each key's string parts from index `skip` on with its decoded value.
fn scan<T: DeserializeOwned>(
    store: &Store,
    prefix: Vec<u8>,
    skip: usize,
) -> Result<Vec<(Vec<String>, T)>, StorageError> {
    let mut out = Vec::new();
    for item in store.sm.prefix(&prefix) {
        let (k, v) = item.into_inner().map_err(StorageError::from)?;
        let mut r = KeyReader::after_header(&k).ok_or_else(|| StorageError::Undecodable("short key".into()))?;
        let mut parts = Vec::new();
        while !r.is_empty() {
            match r.str() {
                Some(s) => parts.push(s.to_string()),
                None => return Err(StorageError::Undecodable("bad key".into())),
            }
        }
        out.push((parts.split_off(skip.min(parts.len())), crate::codec::decode(&v)?));
    }
    Ok(out)
}

/// Messages `from..=to` as stored. The range comes from callers (possibly over the network), so
/// its length is never trusted for an allocation.
fn messages(store: &Store, p: u16, channel_id: &str, from: u64, to: u64) -> Result<Vec<MessageRecord>, StorageError> {
    if from > to {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(to.saturating_sub(from).saturating_add(1).min(1000) as usize);
    for item in store
        .sm
        .range(t::message(p, channel_id, from)..=t::message(p, channel_id, to))
    {
        let (_, v) = item.into_inner().map_err(StorageError::from)?;
        out.push(crate::codec::decode(&v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel query answers the position of the newest message, which a message does not
    /// write into the channel record (`partition/channel_position.rs`).
    #[test]
    fn a_channel_query_answers_the_newest_messages_position() {
        use crate::partition::overlay::Overlay;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = ChannelRecord {
            channel_id: "g_1".into(),
            kind: ChannelKind::Group,
            name: Some("g".into()),
            creator: "a".into(),
            members: vec!["a".into(), "b".into()],
            last_seq: 0,
            created_ms: 1,
            last_ts: 0,
        };
        let mut ov = Overlay::new(&store.sm);
        ov.put_record(t::channel(4, "g_1"), &record);
        ov.commit(&store.db).unwrap();
        for seq in 1..=2u64 {
            let cmd = crate::command::Command::SendMessage {
                channel_id: "g_1".into(),
                sender_id: "a".into(),
                text: "hi".into(),
                client_msg_id: None,
                ts: 100 * seq,
                push: false,
            };
            let mut ov = Overlay::new(&store.sm);
            crate::partition::apply::apply_command(&mut ov, 4, &cmd).unwrap();
            ov.commit(&store.db).unwrap();
        }
        let query = Query::Channel {
            channel_id: "g_1".into(),
        };
        match execute(&store, 4, &query).unwrap() {
            QueryResult::Channel(Some(c)) => assert_eq!((c.last_seq, c.last_ts, c.members.len()), (2, 200, 2)),
            other => panic!("{other:?}"),
        }
        let missing = Query::Channel {
            channel_id: "g_2".into(),
        };
        assert!(matches!(
            execute(&store, 4, &missing).unwrap(),
            QueryResult::Channel(None)
        ));
    }

    fn round_trip_query(q: Query) {
        let back: Query = crate::codec::decode(&crate::codec::encode(&q)).expect("decode");
        assert_eq!(back, q);
    }

    fn round_trip_result(r: QueryResult) {
        let back: QueryResult = crate::codec::decode(&crate::codec::encode(&r)).expect("decode");
        assert_eq!(back, r);
    }

    #[test]
    fn every_query_survives_a_serde_round_trip() {
        let s = |v: &str| v.to_string();
        for q in [
            Query::User { user_id: s("u_1") },
            Query::Username { username: s("alice") },
            Query::Session { token_hash: s("ab12") },
            Query::Devices { user_id: s("u_1") },
            Query::Device {
                user_id: s("u_1"),
                device_id: s("d_1"),
            },
            Query::Cursors {
                user_id: s("u_1"),
                device_id: s("d_1"),
            },
            Query::UserChannels { user_id: s("u_1") },
            Query::Channel { channel_id: s("g_1") },
            Query::ReadMarker {
                channel_id: s("g_1"),
                user_id: s("u_1"),
            },
            Query::Messages {
                channel_id: s("g_ü"),
                from: 0,
                to: u64::MAX,
            },
            Query::PushOutbox,
        ] {
            round_trip_query(q);
        }
    }

    #[test]
    fn query_results_survive_a_serde_round_trip() {
        let user = UserRecord {
            user_id: "u_1".into(),
            username: "alice".into(),
            created_ms: 1_700_000_000_000,
            last_seen: Some(1_700_000_000_500),
        };
        round_trip_result(QueryResult::User(Some(user)));
        round_trip_result(QueryResult::User(None));
        round_trip_result(QueryResult::Cursors(HashMap::from([
            ("g_1".into(), 7),
            ("d_2".into(), 0),
        ])));
        round_trip_result(QueryResult::UserChannels(vec![("g_1".into(), 3)]));
        round_trip_result(QueryResult::ReadMarker(42));
        round_trip_result(QueryResult::Messages(Vec::new()));
        round_trip_result(QueryResult::PushOutbox(Vec::new()));
    }

    #[test]
    fn malformed_query_bytes_are_an_error_not_a_panic() {
        use crate::codec::{decode, FORMAT_BINARY, FORMAT_JSON};
        assert!(decode::<Query>(b"\x01{\"Nope\":{}}").is_err());
        assert!(decode::<Query>(b"\xff\x00").is_err());
        assert!(decode::<Query>(&[FORMAT_BINARY, 200]).is_err());
        assert!(decode::<Query>(&[FORMAT_BINARY]).is_err());
        let negative = b"{\"Messages\":{\"channel_id\":\"g\",\"from\":-1,\"to\":2}}";
        assert!(decode::<Query>(&[&[FORMAT_JSON][..], &negative[..]].concat()).is_err());
    }
}
