//! A channel's position (`last_seq`, `last_ts`) is its newest message's.
//!
//! A message used to rewrite its whole channel record (members, name, creator and the two
//! position fields) next to the message itself: a third of the state machine's memtable
//! entries and about a third of its bytes, so of its skip-list inserts and of every flush
//! (docs/write-path.md, "The channel record is not rewritten per message"). The message
//! record already holds both numbers, and messages are never deleted one by one, so the
//! newest message key of a channel (`[partition][MESSAGE][channel_id][seq]`, one reverse seek)
//! says the same. The stored record keeps the position of its last write (creation, a
//! membership change) and whoever reads it from fjall raises it to the newest message's. The
//! channel cache holds the raised record, so the seek is paid on a cache miss only.
//!
//! Records written by releases before this one carry the current position themselves; the
//! maximum of both is right for old and new data dirs alike.

use fjall::Keyspace;
use ringchat_storage::StorageError;

use crate::model::{ChannelRecord, MessageRecord};

/// `(seq, ts)` of the newest message stored under `messages_prefix` (a
/// `tables::channel_messages_of` prefix), if any.
pub fn newest_stored(sm: &Keyspace, messages_prefix: &[u8]) -> Result<Option<(u64, u64)>, StorageError> {
    match sm.prefix(messages_prefix).next_back() {
        None => Ok(None),
        Some(item) => {
            let (_, value) = item.into_inner()?;
            newest_of(&value).map(Some)
        }
    }
}

/// `(seq, ts)` of an encoded message record.
pub fn newest_of(encoded: &[u8]) -> Result<(u64, u64), StorageError> {
    let message: MessageRecord = crate::codec::decode(encoded)?;
    Ok((message.seq, message.ts))
}

/// Raises `record`'s position to the newest message's (never lowers it).
pub fn raise(record: &mut ChannelRecord, newest: Option<(u64, u64)>) {
    if let Some((seq, ts)) = newest {
        record.last_seq = record.last_seq.max(seq);
        record.last_ts = record.last_ts.max(ts);
    }
}
