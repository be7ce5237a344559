//! Records read back from disk: log entries and every state-machine record type. A torn or
//! corrupted record must be an error, never a panic; inputs are tried as stored and sealed with a
//! valid checksum (a corruption the checksum misses).
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use ringchat_cluster::codec::{decode, seal};
use ringchat_cluster::{
    ChannelRecord, DeviceRecord, MessageRecord, PushOutboxRecord, SessionRecord, TypeConfig, UserChannelRecord,
    UserRecord, UsernameRecord,
};

fn records(bytes: &[u8]) {
    let _ = decode::<EntryOf<TypeConfig>>(bytes);
    let _ = decode::<LogIdOf<TypeConfig>>(bytes);
    let _ = decode::<VoteOf<TypeConfig>>(bytes);
    let _ = decode::<ChannelRecord>(bytes);
    let _ = decode::<MessageRecord>(bytes);
    let _ = decode::<UserRecord>(bytes);
    let _ = decode::<UsernameRecord>(bytes);
    let _ = decode::<DeviceRecord>(bytes);
    let _ = decode::<SessionRecord>(bytes);
    let _ = decode::<UserChannelRecord>(bytes);
    let _ = decode::<PushOutboxRecord>(bytes);
    let _ = decode::<u64>(bytes);
}

fuzz_target!(|data: &[u8]| {
    records(data);
    records(&seal(data));
});
